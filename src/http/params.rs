//! How each query parameter and body field is read: the rules serde cannot
//! say on its own (digits only, a range, one of a few words), with an error
//! that names the parameter and says what it must be. The request types of
//! `users.rs` and `camps.rs` are made of these; the extractors in
//! `extract.rs` turn the errors into 400 answers.
//!
//! Decisions:
//! - **Query values are read as text, trimmed.** `?page=%205` is page 5;
//!   `1e3`, `+5` and `0x10` are not numbers here. A flag (`async`) is
//!   exactly `true`, `1`, `false` or `0`.
//! - **Body fields keep JSON's types.** `{"required_days": "7"}` is refused:
//!   a script that sends a string has a bug worth hearing about. Numbers are
//!   whole and non-negative (`7.0`, `-1` are refused), flags are `true` or
//!   `false`, and `null` is no default.

use serde::de::{self, Deserialize, Deserializer};
use serde_json::Value;

/// A whole number in `min..=max` from the query string; spaces around it are
/// ignored.
pub fn query_int<'de, D: Deserializer<'de>>(
    d: D,
    name: &str,
    min: u64,
    max: u64,
) -> Result<u64, D::Error> {
    let raw = String::deserialize(d)?;
    let raw = raw.trim();
    let parsed = if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        raw.parse::<u64>().ok()
    } else {
        None
    };
    match parsed {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(de::Error::custom(format!(
            "参数 {name} 必须是 {min} 到 {max} 之间的整数 ({name} must be an integer from {min} to {max}, got {raw:?})"
        ))),
    }
}

/// One of `options` (by its word) from the query string; spaces around it
/// are ignored.
pub fn query_choice<'de, D: Deserializer<'de>, T: Copy>(
    d: D,
    name: &str,
    options: &[(&str, T)],
) -> Result<T, D::Error> {
    let raw = String::deserialize(d)?;
    let value = raw.trim();
    if let Some((_, chosen)) = options.iter().find(|(word, _)| *word == value) {
        return Ok(*chosen);
    }
    let list = words(options);
    Err(de::Error::custom(format!(
        "参数 {name} 只能是 {list} ({name} must be one of {list}, got {value:?})"
    )))
}

/// The words of `options` joined with `|`, for a message.
fn words<T>(options: &[(&str, T)]) -> String {
    options
        .iter()
        .map(|(word, _)| *word)
        .collect::<Vec<_>>()
        .join("|")
}

/// A JSON string that is one of `options` (by its word), exactly.
pub fn json_choice<'de, D: Deserializer<'de>, T: Copy>(
    d: D,
    name: &str,
    options: &[(&str, T)],
) -> Result<T, D::Error> {
    let value = Value::deserialize(d)?;
    if let Some((_, chosen)) = options
        .iter()
        .find(|(word, _)| value.as_str() == Some(*word))
    {
        return Ok(*chosen);
    }
    let list = words(options);
    Err(de::Error::custom(format!(
        "{name} 只能是 {list} ({name} must be one of {list}, got {value})"
    )))
}

/// `true`/`1` or `false`/`0` from the query string, exactly.
pub fn query_flag<'de, D: Deserializer<'de>>(d: D, name: &str) -> Result<bool, D::Error> {
    match String::deserialize(d)?.as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(de::Error::custom(format!(
            "参数 {name} 只能是 true 或 false ({name} must be true or false, got {other:?})"
        ))),
    }
}

/// A JSON number that is a whole number in `min..=max`.
pub fn json_int<'de, D: Deserializer<'de>>(
    d: D,
    name: &str,
    min: u64,
    max: u64,
) -> Result<u64, D::Error> {
    match Value::deserialize(d)?.as_u64() {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(de::Error::custom(format!(
            "{name} 必须是 {min} 到 {max} 之间的整数 ({name} must be an integer from {min} to {max})"
        ))),
    }
}

/// A JSON `true` or `false`.
pub fn json_flag<'de, D: Deserializer<'de>>(d: D, name: &str) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(b),
        _ => Err(de::Error::custom(format!(
            "{name} 必须是 true 或 false ({name} must be a boolean)"
        ))),
    }
}

/// Declares a whole-number query parameter: a newtype whose value is always
/// within its bounds, its default when the parameter is absent, and how it
/// is read ([`query_int`]).
macro_rules! int_param {
    ($(#[$meta:meta])* $name:ident($param:literal, $min:expr, $max:expr, default $default:expr)) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(u64);

        impl $name {
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self($default)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::http::params::query_int(d, $param, $min, $max).map(Self)
            }
        }
    };
}
pub(crate) use int_param;

#[cfg(test)]
mod tests {
    use serde::de::IntoDeserializer as _;
    use serde::de::value::Error;

    use super::*;

    fn text(raw: &str) -> serde::de::value::StringDeserializer<Error> {
        raw.to_owned().into_deserializer()
    }

    #[test]
    fn query_numbers_are_trimmed_digits_within_their_bounds() {
        let int = |raw| query_int(text(raw), "page", 1, 200).map_err(|e| e.to_string());
        assert_eq!(int("7"), Ok(7));
        assert_eq!(int(" 200 "), Ok(200));
        for bad in ["0", "201", "", "-1", "+5", "1e3", "0x10", "2.5", "abc"] {
            let e = int(bad).unwrap_err();
            assert!(
                e.contains("page must be an integer from 1 to 200"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn query_words_and_flags_are_one_of_their_options() {
        let order = |raw| query_choice(text(raw), "order", &[("asc", 1), ("desc", 2)]);
        assert_eq!(order(" desc").unwrap(), 2);
        let e = order("up").unwrap_err().to_string();
        assert!(e.contains("order must be one of asc|desc"), "{e}");
        assert!(order("").is_err());
        let flag = |raw| query_flag(text(raw), "async");
        assert!(flag("1").unwrap() && flag("true").unwrap());
        assert!(!flag("0").unwrap() && !flag("false").unwrap());
        for bad in ["maybe", " true", "TRUE", ""] {
            assert!(flag(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn body_fields_keep_their_json_types() {
        let int = |v: Value| json_int(v, "concurrency", 1, 10).map_err(|e| e.to_string());
        assert_eq!(int(serde_json::json!(10)), Ok(10));
        for bad in [
            serde_json::json!(0),
            serde_json::json!(11),
            serde_json::json!("5"),
            serde_json::json!(2.5),
            serde_json::json!(5.0),
            serde_json::json!(-1),
            Value::Null,
        ] {
            let e = int(bad.clone()).unwrap_err();
            assert!(
                e.contains("concurrency must be an integer from 1 to 10"),
                "{bad}: {e}"
            );
        }
        let order = |v: Value| json_choice(v, "order", &[("asc", 1), ("desc", 2)]);
        assert_eq!(order(serde_json::json!("desc")).unwrap(), 2);
        for bad in [serde_json::json!("up"), serde_json::json!(1), Value::Null] {
            let e = order(bad).unwrap_err().to_string();
            assert!(e.contains("order must be one of asc|desc"), "{e}");
        }
        assert!(json_flag(serde_json::json!(true), "force").unwrap());
        for bad in [serde_json::json!("yes"), serde_json::json!(1), Value::Null] {
            let e = json_flag(bad, "force").unwrap_err().to_string();
            assert!(e.contains("force must be a boolean"), "{e}");
        }
    }
}
