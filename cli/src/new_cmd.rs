//! `leat new` and `leat build`: write a processor crate that builds as is,
//! and turn a processor crate into a WebAssembly component.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

/// The guest build script, embedded so that `leat build` works from any folder:
/// it runs as `bash -c SCRIPT leat-build --crate DIR`.
const BUILD_SCRIPT: &str = include_str!("../../scripts/build-guests.sh");

/// The SDK of the checkout this binary was built from.
const DEFAULT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

#[derive(Args, Debug)]
pub struct NewArgs {
    /// The crate's folder; its last component is the crate's name (letters,
    /// digits, `-` and `_`, starting with a letter).
    pub path: PathBuf,
    /// The `leat-sdk` crate to depend on (default: the SDK of the checkout
    /// this `leat` was built from).
    #[arg(long, env = "LEAT_SDK")]
    pub sdk: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The processor crate's folder.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The cargo target dir; share one between processors so that std for
    /// wasm32 is built only once (default: DIR/target).
    #[arg(long, env = "LEAT_GUEST_TARGET_DIR")]
    pub target_dir: Option<PathBuf>,
    /// Also write the JSON Schema of each stream the crate declares with
    /// `leat_sdk::streams!` to DIR/out/schemas/<stream>.json (for `leat
    /// schema set`): runs the crate's native schema test (`cargo test`).
    #[arg(long)]
    pub schemas: bool,
}

/// Names cargo or Rust refuse for a crate.
const RESERVED: &[&str] = &[
    "std",
    "core",
    "alloc",
    "test",
    "proc_macro",
    "proc-macro",
    "self",
    "crate",
    "super",
    "leat-sdk",
    "leat_sdk",
];

/// `my-proc` -> `MyProc`.
fn type_name(crate_name: &str) -> String {
    crate_name
        .split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |c| {
                c.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

fn check_name(name: &str) -> Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!(
            "`{name}` cannot name a processor crate: use letters, digits, `-` and `_`, \
             starting with a letter (e.g. `order-enricher`)"
        );
    }
    if RESERVED.contains(&name) || type_name(name) == "Self" {
        bail!("`{name}` is reserved in Rust: choose another name");
    }
    Ok(())
}

/// A TOML basic string holding `s` (JSON string escapes are valid TOML ones).
fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# cdylib: the WebAssembly component (`leat build`); rlib: native unit tests (`cargo test`).
crate-type = ["cdylib", "rlib"]
doctest = false

[dependencies]
# Typed streams with JSON Schemas (`leat_sdk::streams!`, `leat build --schemas`):
# add `features = ["schema"]` (and serde with its `derive` feature); Avro helpers: "avro".
leat-sdk = {{ path = {sdk} }}

# Fast components: speed over size (the guest runs on every batch), and no
# unwinding (a panic traps; the SDK's panic hook logs its message first).
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"

# Its own workspace, even when created inside another one.
[workspace]
"#,
        sdk = toml_string(&sdk.display().to_string())
    )
}

fn lib_rs(name: &str) -> String {
    let ty = type_name(name);
    format!(
        r#"//! `{name}`: a Leat processor.
//!
//! For each event it emits, to its first output stream, the same key and
//! headers with the value `<greeting>, <value> (#<n>)`, where `greeting`
//! comes from the configuration (default `hello`) and `n` counts the events
//! of that key so far (kept in the processor's state, committed with the
//! outputs and the input offsets).
//!
//! Build it into a component with `leat build`, then run it over a stream:
//!
//! ```text
//! leat process out/{name}.wasm --name {name} --input names --output greetings
//! ```

use leat_sdk::{{Config, Context, Error, Event, Output, Processor}};

/// The processor: its configuration. What must survive a restart belongs in
/// the state (`ctx.put`), not in fields.
pub struct {ty} {{
    greeting: String,
}}

impl Processor for {ty} {{
    fn init(config: &Config) -> Result<Self, Error> {{
        if config.outputs().is_empty() {{
            return Err(Error::new("{name} needs an output stream"));
        }}
        Ok({ty} {{
            greeting: config.get_or("greeting", "hello").to_owned(),
        }})
    }}

    fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {{
        let key = event.key().unwrap_or_default();
        let seen = ctx.get_json::<u64>(key)?.unwrap_or(0) + 1;
        ctx.put_json(key, &seen)?;
        let who = event.value_str().unwrap_or("stranger");
        let greeting = format!("{{}}, {{who}} (#{{seen}})", self.greeting);
        ctx.emit(Output::from_event(event).value(greeting))
    }}
}}

leat_sdk::export!({ty});

#[cfg(test)]
mod tests {{
    use super::*;
    use leat_sdk::testing::TestHost;

    #[test]
    fn greets_and_counts_per_key() {{
        let mut host = TestHost::new().with_inputs(["names"]).with_outputs(["greetings"]);
        let mut p: {ty} = host.init(&[("greeting", "hi")]).unwrap();
        let batch = [
            Event::new("names").with_key("a").with_value("Ada"),
            Event::new("names").with_key("a").with_value("Ada"),
            Event::new("names").with_key("b").with_value("Bob"),
        ];
        let out = host.run(&mut p, &batch).unwrap();
        let values: Vec<_> = out.iter().map(|o| o.value_str().unwrap()).collect();
        assert_eq!(values, ["hi, Ada (#1)", "hi, Ada (#2)", "hi, Bob (#1)"]);
        assert_eq!(out[2].stream(), "greetings");
        assert_eq!(out[2].key_str(), Some("b"));
        assert_eq!(host.state_value("a"), Some(&b"2"[..]));
    }}

    #[test]
    fn needs_an_output() {{
        assert!(TestHost::new().init::<{ty}>(&[]).is_err());
    }}
}}
"#
    )
}

fn readme(name: &str) -> String {
    format!(
        r#"# {name}

A [Leat](https://example.invalid/leat) processor, written with `leat-sdk`.

```sh
cargo test                 # its unit tests, natively (leat_sdk::testing)
leat build                 # the component: out/{name}.wasm
leat stream create names && leat stream create greetings
printf 'a\tAda\nb\tBob\n' | leat produce names --format kv
leat process out/{name}.wasm --name {name} --input names --output greetings --config greeting=hi
leat consume greetings
```

Typed events: declare the types of the streams with `leat_sdk::streams!`
(see the SDK's docs), enable leat-sdk's `schema` feature, then
`leat build --schemas` also writes `out/schemas/<stream>.json`, for
`leat schema set STREAM out/schemas/STREAM.json`.
"#
    )
}

/// `leat new PATH`.
pub fn new(args: NewArgs) -> Result<()> {
    let dir = &args.path;
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        bail!(
            "`{}` does not end with a crate name: give a folder such as `order-enricher`",
            dir.display()
        );
    };
    check_name(name)?;
    let sdk_given = args.sdk.is_some();
    let sdk = args.sdk.unwrap_or_else(|| PathBuf::from(DEFAULT_SDK));
    let sdk = match sdk.canonicalize() {
        Ok(p) if p.join("Cargo.toml").is_file() => p,
        _ if sdk_given => bail!(
            "--sdk {}: no leat-sdk crate there (a folder with the SDK's Cargo.toml)",
            sdk.display()
        ),
        _ => bail!(
            "the leat-sdk crate of the checkout this leat was built from ({}) is gone: \
             pass its folder with --sdk PATH (or LEAT_SDK)",
            sdk.display()
        ),
    };
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} already exists and is not empty: choose another folder",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let write = |file: &str, text: &str| -> Result<()> {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("Cargo.toml", &cargo_toml(name, &sdk))?;
    write("src/lib.rs", &lib_rs(name))?;
    write("README.md", &readme(name))?;
    write(".gitignore", "/target\n/out\n")?;
    // Pin the dependency versions the SDK is tested with (cargo trims the
    // rest), so that the first build needs no registry look-up.
    if let Some(lock) = sdk.parent().map(|root| root.join("Cargo.lock")) {
        if lock.is_file() {
            std::fs::copy(&lock, dir.join("Cargo.lock"))
                .with_context(|| format!("copying {}", lock.display()))?;
        }
    }
    println!("created processor crate {name} in {}", dir.display());
    println!("  test it:   cd {} && cargo test", dir.display());
    println!(
        "  build it:  leat build {}   (writes {}/out/{name}.wasm)",
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// The package name in `DIR/Cargo.toml`.
fn package_name(manifest: &Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let doc: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", manifest.display()))?;
    doc.get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no [package] name", manifest.display()))
}

/// `leat build [DIR]`.
pub fn build(args: BuildArgs) -> Result<()> {
    let dir = &args.dir;
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} has no Cargo.toml: give the folder of a processor crate (create one with `leat new NAME`)",
            dir.display()
        );
    }
    let name = package_name(&manifest)?;
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(BUILD_SCRIPT)
        .arg("leat-build")
        .arg("--crate")
        .arg(dir);
    match &args.target_dir {
        Some(t) => command.env("LEAT_GUEST_TARGET_DIR", t),
        None => command.env_remove("LEAT_GUEST_TARGET_DIR"),
    };
    let status = command
        .status()
        .context("running bash, which builds the component")?;
    if !status.success() {
        bail!(
            "building {} into a component failed (see the messages above)",
            dir.display()
        );
    }
    let component = dir.join("out").join(format!("{name}.wasm"));
    if !component.is_file() {
        bail!("the build succeeded but wrote no {}", component.display());
    }
    println!("built {}", component.display());
    if args.schemas {
        write_schemas(dir, args.target_dir.as_deref())?;
    }
    Ok(())
}

/// The name of the test `leat_sdk::streams!` generates (a filter: the
/// declaration may be in any module).
const SCHEMA_TEST: &str = "__leat_schemas::write";

/// The environment variable naming the folder that test writes to (the
/// SDK's `leat_sdk::SCHEMAS_DIR_ENV`).
const SCHEMAS_DIR_ENV: &str = "LEAT_SCHEMAS_DIR";

/// What to tell the user when the crate declares no stream types.
const NO_STREAMS: &str = "no stream types declared: add to src/lib.rs\n\
    \n    leat_sdk::streams! {\n        pub ORDERS: Order = \"orders\";\n    }\n\n\
    with serde's Serialize/Deserialize and JsonSchema derived on the types \
    (`#[derive(leat_sdk::JsonSchema)]` and `#[schemars(crate = \"leat_sdk::schemars\")]`), \
    and `features = [\"schema\"]` on the leat-sdk dependency in Cargo.toml";

/// `leat build --schemas`: runs the crate's schema test natively with
/// `LEAT_SCHEMAS_DIR` set to a fresh folder, then replaces
/// `DIR/out/schemas` with what it wrote.
fn write_schemas(dir: &Path, target_dir: Option<&Path>) -> Result<()> {
    let out = dir.join("out");
    let fresh = out.join(".schemas.tmp");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).with_context(|| format!("removing {}", fresh.display()))?;
    }
    std::fs::create_dir_all(&fresh).with_context(|| format!("creating {}", fresh.display()))?;
    let fresh = fresh
        .canonicalize()
        .with_context(|| format!("resolving {}", fresh.display()))?;
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .arg("test")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--lib");
    if let Some(t) = target_dir {
        command.arg("--target-dir").arg(t);
    }
    command
        .arg("--")
        .arg(SCHEMA_TEST)
        .env(SCHEMAS_DIR_ENV, &fresh)
        // The component build's flags are for wasm32, not for this native test.
        .env_remove("CARGO_BUILD_TARGET");
    println!("writing the schemas: cargo test --lib -- {SCHEMA_TEST}");
    let status = command
        .status()
        .context("running cargo, which writes the schemas")?;
    if !status.success() {
        bail!(
            "the schema test of {} failed (see the messages above); `cargo test --lib -- {SCHEMA_TEST}` \
             in that folder runs it again",
            dir.display()
        );
    }
    let streams = written_schemas(&fresh)?;
    let dest = out.join("schemas");
    if dest.exists() {
        std::fs::remove_dir_all(&dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    std::fs::rename(&fresh, &dest)
        .with_context(|| format!("moving {} to {}", fresh.display(), dest.display()))?;
    for stream in &streams {
        println!(
            "schema: {}  (leat schema set {stream} {})",
            dest.join(format!("{stream}.json")).display(),
            dest.join(format!("{stream}.json")).display()
        );
    }
    Ok(())
}

/// The streams whose schemas the test wrote to `dir` (`<stream>.json`),
/// sorted; an error saying what to do when it wrote none, or left the
/// SDK's `error.txt`.
fn written_schemas(dir: &Path) -> Result<Vec<String>> {
    let error = dir.join("error.txt");
    if error.is_file() {
        let message = std::fs::read_to_string(&error)
            .with_context(|| format!("reading {}", error.display()))?;
        bail!("{}", message.trim());
    }
    let mut streams = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .file_name();
        if let Some(stream) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
            if !stream.is_empty() {
                streams.push(stream.to_string());
            }
        }
    }
    if streams.is_empty() {
        bail!("{NO_STREAMS}");
    }
    streams.sort();
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(type_name("order-enricher"), "OrderEnricher");
        assert_eq!(type_name("a_b-c"), "ABC");
        assert!(check_name("order-enricher").is_ok());
        for bad in ["", "1abc", "a b", "a/b", "self", "test", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn build_takes_schemas() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            build: BuildArgs,
        }
        let cli = Cli::try_parse_from(["leat", "proc", "--schemas"]).unwrap();
        assert!(cli.build.schemas);
        assert_eq!(cli.build.dir, Path::new("proc"));
        let cli = Cli::try_parse_from(["leat"]).unwrap();
        assert!(!cli.build.schemas);
        assert_eq!(cli.build.dir, Path::new("."));
    }

    #[test]
    fn written_schemas_are_the_json_files_or_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = written_schemas(dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with("no stream types declared: add to src/lib.rs"),
            "{err}"
        );
        assert!(err.contains("leat_sdk::streams!"), "{err}");
        std::fs::write(dir.path().join("orders.priced.json"), "{}").unwrap();
        std::fs::write(dir.path().join("orders.json"), "{}").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        assert_eq!(
            written_schemas(dir.path()).unwrap(),
            ["orders", "orders.priced"]
        );
        std::fs::write(
            dir.path().join("error.txt"),
            "enable the `schema` feature\n",
        )
        .unwrap();
        let err = written_schemas(dir.path()).unwrap_err().to_string();
        assert_eq!(err, "enable the `schema` feature");
    }

    #[test]
    fn cargo_toml_quotes_the_sdk_path() {
        let text = cargo_toml("x", Path::new("/a \"b\"/sdk"));
        let doc: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            doc["dependencies"]["leat-sdk"]["path"].as_str(),
            Some("/a \"b\"/sdk")
        );
    }
}
