//! Request parameters from the query string, a form body or a JSON body, merged into one
//! map, as LeadSquared sends them whichever way the admin configured (GET or POST).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, Uri, header::CONTENT_TYPE};

use super::auth::query_pairs;

/// Why the parameters could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamError {
    /// The JSON body is not a JSON object.
    #[error("the JSON body is not an object of strings and numbers: {0}")]
    Json(String),
    /// The body is not valid UTF-8.
    #[error("the body is not UTF-8")]
    Encoding,
    /// A value holds a control character (CR, LF, NUL, ...): never passed on.
    #[error("parameter {0:?} holds a control character")]
    ControlCharacter(String),
}

/// The merged parameters; body values win over query values of the same name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// Reads the query and the body (JSON when the content type says so, else a form).
    pub fn read(uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Result<Params, ParamError> {
        let mut map: HashMap<String, String> = uri
            .query()
            .map(query_pairs)
            .unwrap_or_default()
            .into_iter()
            .collect();
        if !body.is_empty() {
            let content_type = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if content_type.starts_with("application/json") {
                let value: serde_json::Value =
                    serde_json::from_slice(body).map_err(|e| ParamError::Json(e.to_string()))?;
                let object = value
                    .as_object()
                    .ok_or_else(|| ParamError::Json("not an object".into()))?;
                for (k, v) in object {
                    let text = match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Number(n) => n.to_string(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        serde_json::Value::Null => continue,
                        _ => return Err(ParamError::Json(format!("{k} is not a plain value"))),
                    };
                    map.insert(k.clone(), text);
                }
            } else {
                let text = std::str::from_utf8(body).map_err(|_| ParamError::Encoding)?;
                map.extend(query_pairs(text.trim()));
            }
        }
        for (k, v) in &map {
            if v.chars().any(char::is_control) || k.chars().any(char::is_control) {
                return Err(ParamError::ControlCharacter(k.clone()));
            }
        }
        Ok(Params(map))
    }

    /// A non-empty value, trimmed; LeadSquared leaves unmerged fields as `@name`, which count as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty() && !v.starts_with('@'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).expect("header"));
        h
    }

    #[test]
    fn query_form_and_json_merge() {
        let uri: Uri = "/click-to-call?agentNumber=%2B919876500100&leadId=q"
            .parse()
            .expect("uri");
        let p = Params::read(&uri, &HeaderMap::new(), &Bytes::new()).expect("query");
        assert_eq!(p.get("agentNumber"), Some("+919876500100"));
        let form = Params::read(
            &uri,
            &headers("application/x-www-form-urlencoded"),
            &Bytes::from("leadId=f&customerNumber=96117+95983"),
        )
        .expect("form");
        assert_eq!(form.get("leadId"), Some("f"));
        assert_eq!(form.get("customerNumber"), Some("96117 95983"));
        let json = Params::read(
            &uri,
            &headers("application/json; charset=utf-8"),
            &Bytes::from(r#"{"leadId":"j","customerNumber":9611795983,"x":null}"#),
        )
        .expect("json");
        assert_eq!(json.get("leadId"), Some("j"));
        assert_eq!(json.get("customerNumber"), Some("9611795983"));
    }

    #[test]
    fn hostile_input_is_refused() {
        let uri: Uri = "/x?agentName=a%0D%0AAction:%20Originate"
            .parse()
            .expect("uri");
        assert_eq!(
            Params::read(&uri, &HeaderMap::new(), &Bytes::new()),
            Err(ParamError::ControlCharacter("agentName".into()))
        );
        let uri: Uri = "/x".parse().expect("uri");
        assert!(Params::read(&uri, &headers("application/json"), &Bytes::from("[1,2]")).is_err());
        assert!(
            Params::read(
                &uri,
                &headers("application/json"),
                &Bytes::from("{\"a\":{\"b\":1}}")
            )
            .is_err()
        );
        assert!(
            Params::read(
                &uri,
                &headers("application/json"),
                &Bytes::from("{not json")
            )
            .is_err()
        );
        assert!(
            Params::read(&uri, &headers("text/plain"), &Bytes::from(vec![0xff, 0xfe])).is_err()
        );
    }

    #[test]
    fn unmerged_mail_merge_fields_are_absent() {
        let uri: Uri = "/x?leadId=%40leadId&agentEmail=".parse().expect("uri");
        let p = Params::read(&uri, &HeaderMap::new(), &Bytes::new()).expect("read");
        assert_eq!(p.get("leadId"), None);
        assert_eq!(p.get("agentEmail"), None);
    }
}
