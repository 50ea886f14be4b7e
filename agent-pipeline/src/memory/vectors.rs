//! The embeddings cache beside an index (`vectors.bin`): one unit vector per chunk content
//! hash, for one model, so that a chunk whose text did not change is never embedded twice.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use super::error::{MemoryError, Result};

const MAGIC: &[u8; 8] = b"APVEC1\0\0";

/// Unit vectors by content hash, all of one model and length.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Vectors {
    pub(crate) model: String,
    pub(crate) dims: usize,
    pub(crate) by_hash: HashMap<u64, Vec<f32>>,
}

impl Vectors {
    pub(crate) fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            ..Self::default()
        }
    }

    /// Adds `vector` (normalised) for `hash`; `false` when its length differs from the
    /// others'.
    pub(crate) fn insert(&mut self, hash: u64, mut vector: Vec<f32>) -> bool {
        if self.by_hash.is_empty() {
            self.dims = vector.len();
        }
        if vector.len() != self.dims || vector.is_empty() {
            return false;
        }
        normalise(&mut vector);
        self.by_hash.insert(hash, vector);
        true
    }

    /// The cache in `path` if it is of `model`; an empty cache when there is none, or when it
    /// cannot be read (it is only a cache: the reason is logged).
    pub(crate) fn load(path: &Path, model: &str) -> Self {
        match std::fs::read(path) {
            Ok(bytes) => match decode(&bytes) {
                Some(vectors) if vectors.model == model => vectors,
                Some(_) => Self::new(model),
                None => {
                    tracing::warn!(path = %path.display(), "ignoring an unreadable embeddings cache");
                    Self::new(model)
                }
            },
            Err(_) => Self::new(model),
        }
    }

    /// Writes the cache to `path` atomically (a temporary file beside it, then a rename).
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::with_capacity(32 + self.by_hash.len() * (8 + 4 * self.dims));
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&u32::try_from(self.model.len()).unwrap_or(0).to_le_bytes());
        bytes.extend_from_slice(self.model.as_bytes());
        bytes.extend_from_slice(&u32::try_from(self.dims).unwrap_or(0).to_le_bytes());
        bytes.extend_from_slice(&(self.by_hash.len() as u64).to_le_bytes());
        let mut entries: Vec<(&u64, &Vec<f32>)> = self.by_hash.iter().collect();
        entries.sort_by_key(|(hash, _)| **hash);
        for (hash, vector) in entries {
            bytes.extend_from_slice(&hash.to_le_bytes());
            for x in vector {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        let temp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        let written = std::fs::File::create(&temp).and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
            let _ = std::fs::remove_file(&temp);
            return Err(MemoryError::io(path, e));
        }
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Option<Vectors> {
    let mut at: usize = 0;
    let mut take = |n: usize| -> Option<&[u8]> {
        let part = bytes.get(at..at.checked_add(n)?)?;
        at += n;
        Some(part)
    };
    if take(8)? != MAGIC {
        return None;
    }
    let model_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let model = String::from_utf8(take(model_len)?.to_vec()).ok()?;
    let dims = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let count = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let mut by_hash = HashMap::new();
    for _ in 0..count {
        let hash = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let raw = take(dims.checked_mul(4)?)?;
        let vector = raw
            .chunks_exact(4)
            .map(|b| b.try_into().map(f32::from_le_bytes))
            .collect::<Result<Vec<f32>, _>>()
            .ok()?;
        by_hash.insert(hash, vector);
    }
    (at == bytes.len()).then_some(Vectors {
        model,
        dims,
        by_hash,
    })
}

fn normalise(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        for x in vector.iter_mut() {
            *x /= norm;
        }
    }
}

/// The cosine similarity of two unit vectors.
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `vector` as a unit vector.
pub(crate) fn unit(mut vector: Vec<f32>) -> Vec<f32> {
    normalise(&mut vector);
    vector
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_round_trips_and_refuses_other_models_and_garbage()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let temp = tempfile::tempdir()?;
        let path = temp.path().join("vectors.bin");
        let mut vectors = Vectors::new("m1");
        assert!(vectors.insert(7, vec![3.0, 4.0]));
        assert!(!vectors.insert(8, vec![1.0, 2.0, 3.0]));
        vectors.save(&path)?;
        let loaded = Vectors::load(&path, "m1");
        assert_eq!(loaded, vectors);
        assert_eq!(loaded.by_hash.get(&7), Some(&vec![0.6, 0.8]));
        assert!(Vectors::load(&path, "m2").by_hash.is_empty());
        let bytes = std::fs::read(&path)?;
        std::fs::write(&path, &bytes[..bytes.len() - 1])?;
        assert!(Vectors::load(&path, "m1").by_hash.is_empty());
        Ok(())
    }
}
