//! The registry's side of the log: each stream's value and key schemas, in
//! the API's types. Over [`Log`], so that the command line changes schemas
//! on a data directory without a server, as it produces.

use leat_api as api;
use leat_schema::{Part, Subject, VersionRef};

use crate::error::ControlError;
use crate::log::Log;

fn subject(stream: &str, key: bool) -> Result<Subject, ControlError> {
    leat_broker::validate_name(stream)?;
    Ok(Subject::of(
        stream,
        if key { Part::Key } else { Part::Value },
    ))
}

impl Log {
    /// Registers a new version of a stream's schema, unless it breaks the
    /// stream's compatibility mode (the error names each field).
    pub fn set_schema(
        &self,
        stream: &str,
        req: api::SetSchema,
    ) -> Result<api::SchemaSet, ControlError> {
        let subject = subject(stream, req.key)?;
        let done = self.schemas().register(&subject, req.format, &req.schema)?;
        Ok(api::SchemaSet {
            version: done.version,
            created: done.created,
        })
    }

    /// Whether [`Log::set_schema`] would accept `req`, and why not.
    pub fn check_schema(
        &self,
        stream: &str,
        req: api::SetSchema,
    ) -> Result<api::SchemaCheck, ControlError> {
        let subject = subject(stream, req.key)?;
        let reasons = self.schemas().check(&subject, req.format, &req.schema)?;
        Ok(api::SchemaCheck {
            compatible: reasons.is_empty(),
            compatibility: self.schemas().compatibility(Some(&subject)),
            reasons,
        })
    }

    /// One version of a stream's schema.
    pub fn schema(
        &self,
        stream: &str,
        key: bool,
        version: VersionRef,
    ) -> Result<api::SchemaVersion, ControlError> {
        Ok(self.schemas().version(&subject(stream, key)?, version)?)
    }

    /// Every version of a stream's schema, oldest first.
    pub fn schema_history(
        &self,
        stream: &str,
        key: bool,
    ) -> Result<api::SchemaHistory, ControlError> {
        let subject = subject(stream, key)?;
        Ok(api::SchemaHistory {
            compatibility: self.schemas().compatibility(Some(&subject)),
            versions: self.schemas().history(&subject),
            subject: subject.to_string(),
        })
    }

    /// Sets a stream's compatibility mode.
    pub fn set_compatibility(
        &self,
        stream: &str,
        req: api::SetCompatibility,
    ) -> Result<api::Done, ControlError> {
        let subject = subject(stream, req.key)?;
        self.schemas()
            .set_compatibility(Some(&subject), req.compatibility)?;
        Ok(api::Done {
            message: format!("{subject} is now {}", req.compatibility),
        })
    }
}
