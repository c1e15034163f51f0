//! `${VAR}` and `${VAR:-default}` expansion over a parsed YAML tree, so that an
//! unset variable is reported with the YAML path where it was used.

use serde_yaml::Value;

/// Expands every string in `value` from `env`. Errors name the YAML path.
///
/// A string that is exactly one `${...}` reference and expands to a YAML number or
/// bool becomes that scalar (so `rpm: ${RPM}` works); string-typed fields accept it back.
pub fn expand_tree(
    value: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) {
    match value {
        Value::String(s) => match expand_str(s, env) {
            Ok(expanded) => {
                let whole_ref = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
                if whole_ref {
                    if let Ok(v @ (Value::Number(_) | Value::Bool(_))) =
                        serde_yaml::from_str::<Value>(&expanded)
                    {
                        *value = v;
                        return;
                    }
                }
                *s = expanded;
            }
            Err(UnsetVar(var)) => errors.push(format!(
                "{}: environment variable {var} is not set (use ${{{var}:-default}} to give a default)",
                display_path(path)
            )),
        },
        Value::Sequence(seq) => {
            for (i, item) in seq.iter_mut().enumerate() {
                expand_tree(item, &format!("{path}[{i}]"), env, errors);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
                };
                let child = if path.is_empty() { key } else { format!("{path}.{key}") };
                expand_tree(v, &child, env, errors);
            }
        }
        Value::Tagged(t) => expand_tree(&mut t.value, path, env, errors),
        _ => {}
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "(top level)"
    } else {
        path
    }
}

/// A `${VAR}` without a default whose variable is not set (its name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {0} is not set")]
pub struct UnsetVar(pub String);

impl PartialEq<&str> for UnsetVar {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Expands `${VAR}` / `${VAR:-default}` in one string; `$$` is a literal `$`.
/// The error names the first unset variable without a default.
pub fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, UnsetVar> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.push_str(&rest[pos..]);
                return Ok(out);
            };
            let inner = &body[..end];
            let (name, default) = match inner.find(":-") {
                Some(i) => (&inner[..i], Some(&inner[i + 2..])),
                None => (inner, None),
            };
            match env(name).filter(|v| !(v.is_empty() && default.is_some())) {
                Some(v) => out.push_str(&v),
                None => match default {
                    Some(d) => out.push_str(d),
                    None => return Err(UnsetVar(name.to_string())),
                },
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            "N" => Some("42".into()),
            _ => None,
        }
    }

    #[test]
    fn expands() {
        assert_eq!(expand_str("x${A}y", &env).unwrap(), "xalphay");
        assert_eq!(expand_str("${B:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand_str("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(expand_str("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand_str("$$A", &env).unwrap(), "$A");
        assert_eq!(expand_str("${B}", &env).unwrap_err(), "B");
    }

    #[test]
    fn tree_paths_and_numbers() {
        let mut v: Value = serde_yaml::from_str("a: {b: [x, '${MISSING}']}\nn: ${N}\n").unwrap();
        let mut errs = vec![];
        expand_tree(&mut v, "", &env, &mut errs);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("a.b[1]: environment variable MISSING"),
            "{errs:?}"
        );
        assert_eq!(v["n"], Value::Number(42.into()));
    }
}
