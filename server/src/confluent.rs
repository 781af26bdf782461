//! The subset of Confluent's Schema Registry REST API that its clients and
//! serializers use (confluent-kafka's `SchemaRegistryClient`, its Avro and
//! JSON serializers), over the log's registry: subjects `STREAM-value` and
//! `STREAM-key`, versions, schemas by id, compatibility modes and checks.
//! Errors are Confluent's: `{"error_code": 40401, "message": ...}`.
//!
//! Schema references and deletions are not served: a request for them is
//! answered with an error that says so.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use leat_control::Control as Host;
use leat_schema::{Compatibility, Format, Registry, SchemaError, Subject, VersionInfo, VersionRef};

type Hosted = State<Arc<Host>>;

/// The routes, for [`Router::merge`] once given the host.
pub(crate) fn routes() -> Router<Arc<Host>> {
    Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_text),
        )
        .route("/schemas/types", get(types))
        .route("/schemas/ids/{id}", get(by_id))
        .route("/schemas/ids/{id}/versions", get(id_versions))
        .route("/schemas/ids/{id}/subjects", get(id_subjects))
        .route("/config", get(global_config).put(set_global_config))
        .route("/config/{subject}", get(config).put(set_config))
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_latest),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_version),
        )
}

/// A Confluent error: the HTTP status is its code's first three digits.
struct Fail {
    code: u32,
    message: String,
}

impl Fail {
    fn new(code: u32, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
        }
    }
}

impl From<SchemaError> for Fail {
    fn from(e: SchemaError) -> Fail {
        let code = match &e {
            SchemaError::Malformed(_) => 42201,
            SchemaError::Incompatible { .. } => 409,
            SchemaError::SubjectNotFound(_) => 40401,
            SchemaError::VersionNotFound { .. } => 40402,
            SchemaError::SchemaNotFound(_) => 40403,
            _ => 50001,
        };
        Fail::new(code, e.to_string())
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let status = if self.code >= 1000 {
            self.code / 100
        } else {
            self.code
        };
        let status =
            StatusCode::from_u16(status as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(json!({"error_code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

type Answer = Result<Json<Value>, Fail>;

/// Runs `f` over the registry on the blocking pool (a registration writes
/// to the log and waits for its fsync).
async fn run<T: Send + 'static>(
    host: Arc<Host>,
    f: impl FnOnce(&Registry) -> Result<T, Fail> + Send + 'static,
) -> Result<T, Fail> {
    tokio::task::spawn_blocking(move || f(host.log().schemas()))
        .await
        .map_err(|e| Fail::new(50001, format!("the request's task failed: {e}")))?
}

fn subject(s: &str) -> Result<Subject, Fail> {
    s.parse().map_err(|e: String| Fail::new(40401, e))
}

fn version_ref(v: &str) -> Result<VersionRef, Fail> {
    v.parse().map_err(|e: String| Fail::new(42202, e))
}

/// A schema in a request body; `schemaType` absent means Avro.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaBody {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

impl SchemaBody {
    fn format(&self) -> Result<Format, Fail> {
        if !self.references.is_empty() {
            return Err(Fail::new(
                42201,
                "schema references are not supported by Leat: inline the referenced schemas",
            ));
        }
        match self.schema_type.as_deref() {
            None => Ok(Format::Avro),
            Some(t) => t.parse().map_err(|e: String| Fail::new(42201, e)),
        }
    }
}

fn view(v: &VersionInfo) -> Value {
    json!({
        "subject": v.subject,
        "version": v.version,
        "id": v.id,
        "schemaType": v.format.as_str(),
        "schema": v.schema,
    })
}

async fn subjects(State(host): Hosted) -> Answer {
    let all = run(host, |r| Ok(r.subjects())).await?;
    Ok(Json(json!(all
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>())))
}

async fn versions(State(host): Hosted, Path(s): Path<String>) -> Answer {
    let subject = subject(&s)?;
    let history = run(host, move |r| Ok(r.history(&subject))).await?;
    if history.is_empty() {
        return Err(SchemaError::SubjectNotFound(format!("subject {s} not found")).into());
    }
    Ok(Json(json!(history
        .iter()
        .map(|v| v.version)
        .collect::<Vec<_>>())))
}

async fn register(
    State(host): Hosted,
    Path(s): Path<String>,
    Json(body): Json<SchemaBody>,
) -> Answer {
    let subject = subject(&s)?;
    let format = body.format()?;
    let done = run(host, move |r| {
        Ok(r.register(&subject, format, &body.schema)?)
    })
    .await?;
    Ok(Json(view(&done.version)))
}

async fn lookup(
    State(host): Hosted,
    Path(s): Path<String>,
    Json(body): Json<SchemaBody>,
) -> Answer {
    let subject = subject(&s)?;
    let format = body.format()?;
    let found = run(host, move |r| {
        if r.history(&subject).is_empty() {
            return Err(
                SchemaError::SubjectNotFound(format!("subject {subject} not found")).into(),
            );
        }
        Ok(r.lookup(&subject, format, &body.schema)?)
    })
    .await?;
    Ok(Json(view(&found)))
}

async fn version(State(host): Hosted, Path((s, v)): Path<(String, String)>) -> Answer {
    let (subject, v) = (subject(&s)?, version_ref(&v)?);
    let found = run(host, move |r| Ok(r.version(&subject, v)?)).await?;
    Ok(Json(view(&found)))
}

async fn version_text(State(host): Hosted, Path((s, v)): Path<(String, String)>) -> Answer {
    let (subject, v) = (subject(&s)?, version_ref(&v)?);
    let found = run(host, move |r| Ok(r.version(&subject, v)?)).await?;
    let schema: Value = serde_json::from_str(&found.schema).unwrap_or(Value::String(found.schema));
    Ok(Json(schema))
}

async fn types() -> Json<Value> {
    Json(json!(["JSON", "AVRO"]))
}

async fn by_id(State(host): Hosted, Path(id): Path<u32>) -> Answer {
    let (format, schema) = run(host, move |r| Ok(r.by_id(id)?)).await?;
    Ok(Json(
        json!({"schema": schema, "schemaType": format.as_str()}),
    ))
}

async fn id_versions(State(host): Hosted, Path(id): Path<u32>) -> Answer {
    let uses = run(host, move |r| {
        r.by_id(id)?;
        Ok(r.uses_of(id))
    })
    .await?;
    Ok(Json(json!(uses
        .iter()
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect::<Vec<_>>())))
}

async fn id_subjects(State(host): Hosted, Path(id): Path<u32>) -> Answer {
    let uses = run(host, move |r| {
        r.by_id(id)?;
        Ok(r.uses_of(id))
    })
    .await?;
    let mut subjects: Vec<String> = uses.into_iter().map(|(s, _)| s).collect();
    subjects.dedup();
    Ok(Json(json!(subjects)))
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigView {
    compatibility_level: &'static str,
}

fn mode(body: &ConfigBody) -> Result<Compatibility, Fail> {
    body.compatibility
        .parse()
        .map_err(|e: String| Fail::new(42203, e))
}

async fn global_config(State(host): Hosted) -> Answer {
    let mode = run(host, |r| Ok(r.compatibility(None))).await?;
    Ok(Json(json!(ConfigView {
        compatibility_level: mode.as_str()
    })))
}

async fn set_global_config(State(host): Hosted, Json(body): Json<ConfigBody>) -> Answer {
    let mode = mode(&body)?;
    run(host, move |r| Ok(r.set_compatibility(None, mode)?)).await?;
    Ok(Json(json!({"compatibility": mode.as_str()})))
}

async fn config(State(host): Hosted, Path(s): Path<String>) -> Answer {
    let subject = subject(&s)?;
    let mode = run(host, move |r| {
        r.own_compatibility(&subject).ok_or_else(|| {
            Fail::new(
                40408,
                format!("subject {subject} has no compatibility of its own"),
            )
        })
    })
    .await?;
    Ok(Json(json!(ConfigView {
        compatibility_level: mode.as_str()
    })))
}

async fn set_config(
    State(host): Hosted,
    Path(s): Path<String>,
    Json(body): Json<ConfigBody>,
) -> Answer {
    let subject = subject(&s)?;
    let mode = mode(&body)?;
    run(
        host,
        move |r| Ok(r.set_compatibility(Some(&subject), mode)?),
    )
    .await?;
    Ok(Json(json!({"compatibility": mode.as_str()})))
}

fn verdict(reasons: Vec<leat_schema::Incompatibility>) -> Json<Value> {
    Json(json!({
        "is_compatible": reasons.is_empty(),
        "messages": reasons.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
    }))
}

/// Whether the schema could be the next version (under the subject's mode).
async fn check_latest(
    State(host): Hosted,
    Path(s): Path<String>,
    Json(body): Json<SchemaBody>,
) -> Answer {
    let subject = subject(&s)?;
    let format = body.format()?;
    let reasons = run(host, move |r| {
        Ok(r.check(&subject, format, &body.schema)?)
    })
    .await?;
    Ok(verdict(reasons))
}

/// Whether the schema is compatible with one version, under the subject's mode.
async fn check_version(
    State(host): Hosted,
    Path((s, v)): Path<(String, String)>,
    Json(body): Json<SchemaBody>,
) -> Answer {
    let (subject, v) = (subject(&s)?, version_ref(&v)?);
    let format = body.format()?;
    let reasons = run(host, move |r| {
        Ok(r.check_against(&subject, v, format, &body.schema)?)
    })
    .await?;
    Ok(verdict(reasons))
}
