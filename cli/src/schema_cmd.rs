//! `leat schema`: each stream's versioned value and key schemas, on a
//! server or on the data directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use leat_api as api;
use leat_schema::{Compatibility, Format, VersionRef};

use crate::backend::Backend;

#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// Register FILE as the next version of STREAM's schema; refused, with
    /// each incompatible field, when it breaks the stream's compatibility mode.
    Set(FileArgs),
    /// Say whether FILE would be accepted as the next version, and why not.
    Check(FileArgs),
    /// Print one version of STREAM's schema (the latest by default).
    Show {
        /// The stream.
        stream: String,
        /// The version: a number from 1, or `latest`.
        #[arg(long, default_value = "latest")]
        version: VersionRef,
        /// The key schema instead of the value schema.
        #[arg(long)]
        key: bool,
    },
    /// List every version of STREAM's schema.
    History {
        /// The stream.
        stream: String,
        /// The key schema instead of the value schema.
        #[arg(long)]
        key: bool,
    },
    /// Set STREAM's compatibility mode: BACKWARD (the default),
    /// BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL,
    /// FULL_TRANSITIVE or NONE.
    Compatibility {
        /// The stream.
        stream: String,
        /// The mode.
        mode: Compatibility,
        /// The key schema's mode instead of the value schema's.
        #[arg(long)]
        key: bool,
    },
}

#[derive(Args, Debug)]
pub struct FileArgs {
    /// The stream.
    stream: String,
    /// The schema file: JSON Schema, or Avro (`.avsc`).
    file: PathBuf,
    /// The key schema instead of the value schema.
    #[arg(long)]
    key: bool,
    /// JSON or AVRO; by default AVRO for a `.avsc` file, else JSON.
    #[arg(long)]
    format: Option<Format>,
}

impl FileArgs {
    fn request(&self) -> Result<api::SetSchema> {
        let schema = std::fs::read_to_string(&self.file)
            .with_context(|| format!("reading the schema file {}", self.file.display()))?;
        Ok(api::SetSchema {
            schema,
            format: self.format.unwrap_or_else(|| format_of(&self.file)),
            key: self.key,
        })
    }
}

/// The format a schema file's name says.
pub fn format_of(file: &Path) -> Format {
    match file.extension().and_then(|e| e.to_str()) {
        Some("avsc") => Format::Avro,
        _ => Format::Json,
    }
}

pub fn schema(backend: &dyn Backend, cmd: SchemaCommand) -> Result<()> {
    match cmd {
        SchemaCommand::Set(args) => {
            let done = backend.set_schema(&args.stream, args.request()?)?;
            let v = &done.version;
            if done.created {
                println!(
                    "{} version {} registered (schema id {}, {})",
                    v.subject, v.version, v.id, v.format
                );
            } else {
                println!(
                    "{} version {} already has this schema: nothing changed",
                    v.subject, v.version
                );
            }
        }
        SchemaCommand::Check(args) => {
            let check = backend.check_schema(&args.stream, args.request()?)?;
            if check.compatible {
                println!(
                    "compatible: {} would accept it as its next version ({})",
                    args.stream, check.compatibility
                );
            } else {
                for r in &check.reasons {
                    println!("  {r}");
                }
                bail!(
                    "incompatible under {}: {} reason(s) above",
                    check.compatibility,
                    check.reasons.len()
                );
            }
        }
        SchemaCommand::Show {
            stream,
            version,
            key,
        } => {
            let v = backend.schema(&stream, key, version)?;
            println!(
                "# {} version {} (schema id {}, {})",
                v.subject, v.version, v.id, v.format
            );
            let pretty = serde_json::from_str::<serde_json::Value>(&v.schema)
                .and_then(|j| serde_json::to_string_pretty(&j))
                .unwrap_or(v.schema);
            println!("{pretty}");
        }
        SchemaCommand::History { stream, key } => {
            let h = backend.schema_history(&stream, key)?;
            if h.versions.is_empty() {
                println!("{} has no schema ({})", h.subject, h.compatibility);
            } else {
                println!("{} ({})", h.subject, h.compatibility);
                for v in &h.versions {
                    println!(
                        "  version {}: schema id {}, {}, {} bytes",
                        v.version,
                        v.id,
                        v.format,
                        v.schema.len()
                    );
                }
            }
        }
        SchemaCommand::Compatibility { stream, mode, key } => {
            let done = backend.set_compatibility(
                &stream,
                api::SetCompatibility {
                    compatibility: mode,
                    key,
                },
            )?;
            println!("{}", done.message);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_gives_the_format() {
        assert_eq!(format_of(Path::new("order.avsc")), Format::Avro);
        assert_eq!(format_of(Path::new("order.json")), Format::Json);
        assert_eq!(format_of(Path::new("order")), Format::Json);
    }
}
