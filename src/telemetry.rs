//! Logging setup. `RUST_LOG` filters (default `info`); `LOG_FORMAT` picks
//! `text` (default, for people) or `json` (one object a line, for a log
//! collector). Secrets never reach a log line because they only exist as
//! [`crate::config::Secret`], whose `Debug`/`Display` print a placeholder.
//! Logs go to standard error, so commands that print data (`refund-list
//! --format csv`) keep standard output clean for a pipe or a file.
//!
//! Every line logged while serving a request carries its id: the HTTP layer
//! (`http/observe.rs`) serves each request inside a `request` span with a
//! `request_id` field. In text it shows as `request{request_id=…}:` before
//! the message; in JSON as `"span": {"request_id": …}` on the line (the
//! current span only, so lines stay short).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `LOG_FORMAT`'s value; unset or empty means text.
    pub fn parse(raw: Option<&str>) -> Result<Self, String> {
        match raw.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
            None | Some("" | "text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(format!(
                "configuration: LOG_FORMAT: expected text or json, got {other:?}"
            )),
        }
    }
}

/// Installs the subscriber from `RUST_LOG` and `LOG_FORMAT` (read from the
/// environment, after `.env`). A bad `LOG_FORMAT` is an error naming it.
pub fn init() -> Result<(), String> {
    let format = LogFormat::parse(std::env::var("LOG_FORMAT").ok().as_deref())?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colours only for a person at a terminal; log files and collectors
        // get plain text they can search.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_is_text_unless_json_is_asked_for() {
        assert_eq!(LogFormat::parse(None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("JSON")), Ok(LogFormat::Json));
        let e = LogFormat::parse(Some("yaml")).unwrap_err();
        assert!(e.contains("LOG_FORMAT"), "{e}");
    }
}
