//! The journal's record: one file write, framed so that a torn tail is recognised.
//!
//! ```text
//! magic "APJ1" · written_at (u64, ns since the epoch) · path length (u32) · data length (u32)
//! · checksum (u64, FNV-1a of the time, path and data) · path (UTF-8, relative to DATA_DIR) · data
//! ```
//! All numbers are little-endian.

use std::time::{Duration, SystemTime};

const MAGIC: &[u8; 4] = b"APJ1";
const HEADER: usize = 4 + 8 + 4 + 4 + 8;

/// One journaled write: `data` became the content of `path` at `written_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The file, relative to the data directory (`<task_id>/design@v1.json`).
    pub(crate) path: String,
    /// Its whole content.
    pub(crate) data: Vec<u8>,
    /// When it was written, before the file itself was.
    pub(crate) written_at: SystemTime,
}

impl Record {
    /// Appends the record's bytes to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let nanos = nanos_since_epoch(self.written_at);
        out.reserve(HEADER + self.path.len() + self.data.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nanos.to_le_bytes());
        out.extend_from_slice(&len32(self.path.len()).to_le_bytes());
        out.extend_from_slice(&len32(self.data.len()).to_le_bytes());
        out.extend_from_slice(&checksum(nanos, self.path.as_bytes(), &self.data).to_le_bytes());
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(&self.data);
    }

    /// The records of a journal, in order, up to the first that is incomplete or damaged
    /// (the tail a crash may leave); the second value says whether such a tail was found.
    pub(crate) fn decode_all(mut bytes: &[u8]) -> (Vec<Record>, bool) {
        let mut records = Vec::new();
        while !bytes.is_empty() {
            match decode_one(bytes) {
                Some((record, used)) => {
                    records.push(record);
                    bytes = &bytes[used..];
                }
                None => return (records, true),
            }
        }
        (records, false)
    }
}

fn decode_one(bytes: &[u8]) -> Option<(Record, usize)> {
    let header = bytes.get(..HEADER)?;
    if &header[..4] != MAGIC {
        return None;
    }
    let nanos = u64::from_le_bytes(header[4..12].try_into().ok()?);
    let path_len = u32::from_le_bytes(header[12..16].try_into().ok()?) as usize;
    let data_len = u32::from_le_bytes(header[16..20].try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(header[20..28].try_into().ok()?);
    let end = HEADER.checked_add(path_len)?.checked_add(data_len)?;
    let body = bytes.get(HEADER..end)?;
    let (path, data) = body.split_at(path_len);
    if checksum(nanos, path, data) != sum {
        return None;
    }
    let record = Record {
        path: String::from_utf8(path.to_vec()).ok()?,
        data: data.to_vec(),
        written_at: SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos),
    };
    Some((record, end))
}

fn nanos_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Lengths are u32: a single file of 4 GiB or more is not an artifact.
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// 64-bit FNV-1a: enough to tell a torn or zeroed tail from a record.
fn checksum(nanos: u64, path: &[u8], data: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in nanos.to_le_bytes().iter().chain(path).chain(data) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, data: &str) -> Record {
        Record {
            path: path.to_owned(),
            data: data.as_bytes().to_vec(),
            written_at: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
        }
    }

    #[test]
    fn records_read_back_in_order() {
        let written = [
            record("a/design@v1.json", "{}\n"),
            record("a/task.json", ""),
        ];
        let mut bytes = Vec::new();
        for r in &written {
            r.encode_into(&mut bytes);
        }
        assert_eq!(Record::decode_all(&bytes), (written.to_vec(), false));
    }

    #[test]
    fn a_torn_or_damaged_tail_ends_the_journal() {
        let mut bytes = Vec::new();
        record("a/x.json", "first").encode_into(&mut bytes);
        let whole = bytes.len();
        record("a/y.json", "second").encode_into(&mut bytes);
        for cut in [whole + 1, whole + HEADER, bytes.len() - 1] {
            let (records, torn) = Record::decode_all(&bytes[..cut]);
            assert_eq!((records.len(), torn), (1, true), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        assert_eq!(Record::decode_all(&flipped).0.len(), 1, "checksum mismatch");
        let mut zeroed = bytes[..whole].to_vec();
        zeroed.extend_from_slice(&[0; 64]);
        assert_eq!(
            Record::decode_all(&zeroed),
            (vec![record("a/x.json", "first")], true)
        );
    }
}
