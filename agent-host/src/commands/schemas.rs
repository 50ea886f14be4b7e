//! `schemas`: the schema registry of the messages and stage outputs, for other programs.

use std::io::Write;
use std::process::ExitCode;

use agent_pipeline::schemas::{self, SchemaEntry};
use anyhow::{Context, Result};

use crate::cli::SchemasArgs;
use crate::config::Config;

/// Prints every schema as one JSON array, one schema alone (`--name`), or a table (`--list`).
pub(crate) fn schemas(config: &Config, args: &SchemasArgs) -> Result<ExitCode> {
    let text = if let Some(name) = &args.name {
        let entry = schemas::find(&config.topics, name)?;
        pretty(&entry.schema)?
    } else if args.list {
        table(&schemas::registry(&config.topics))
    } else {
        pretty(&schemas::registry(&config.topics))?
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A reader that stops early (`| head`) is not an error of this command.
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("cannot write to the standard output")
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `value` as indented JSON, with a final line break.
fn pretty(value: &impl serde::Serialize) -> Result<String> {
    let mut text =
        serde_json::to_string_pretty(value).context("cannot write the schemas as JSON")?;
    text.push('\n');
    Ok(text)
}

/// One line per schema: name, topic (or where the artifact is stored) and version.
fn table(registry: &[SchemaEntry]) -> String {
    let rows: Vec<[String; 3]> = registry
        .iter()
        .map(|entry| {
            let topic = match entry.file {
                Some(file) => format!("{} {file}", entry.topic),
                None => entry.topic.clone(),
            };
            [entry.name.to_owned(), topic, entry.version.clone()]
        })
        .collect();
    let header = ["NAME".to_owned(), "TOPIC".to_owned(), "VERSION".to_owned()];
    let width = |column: usize| {
        std::iter::once(&header)
            .chain(&rows)
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (name_width, topic_width) = (width(0), width(1));
    std::iter::once(&header)
        .chain(&rows)
        .map(|[name, topic, version]| {
            format!("{name:<name_width$}  {topic:<topic_width$}  {version}\n")
        })
        .collect()
}
