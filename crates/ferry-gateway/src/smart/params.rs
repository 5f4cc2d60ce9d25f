//! Reading OAuth request parameters from a query string or form body.

use std::collections::HashMap;

/// Request parameters by name.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` text. RFC 6749 §3.1 and
    /// §3.2: a parameter sent more than once is an error.
    pub fn parse(text: &str) -> Result<Params, String> {
        let mut params = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(text.as_bytes()) {
            if params.insert(name.to_string(), value.into_owned()).is_some() {
                return Err(format!("parameter '{name}' is sent more than once"));
            }
        }
        Ok(Params(params))
    }

    /// Returns the value; a parameter sent without a value counts as absent
    /// (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    pub fn require(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("missing required parameter '{name}'"))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }
}
