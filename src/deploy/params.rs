//! Stack parameters: the environment's file (`params-<env>.json`), the
//! `--param KEY=VALUE` overrides and the values the tool supplies itself,
//! checked against the parameters each template declares before any AWS call.
//! An empty value is no value: the template's default applies, or the tool's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::config::ConfigError;

/// Parameters the deploy tool fills in after publishing (image, code package)
/// or from its own naming (the Fargate stack's name).
pub const SUPPLIED: [&str; 4] = ["ContainerImage", "CodeBucket", "CodeKey", "FargateStackName"];

/// Parameters the deploy tool finds in the account when they are not given:
/// the region's default VPC and its public subnets ([`super::network`]).
pub const DISCOVERED: [&str; 2] = ["VpcId", "PublicSubnets"];

/// One declared template parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub name: String,
    pub default: Option<String>,
    pub allowed: Vec<String>,
    /// `MinValue` and `MaxValue` of a `Number` parameter (CloudFormation
    /// refuses a value outside them; the local emulator does not).
    pub range: (Option<String>, Option<String>),
}

/// A CloudFormation template with its declared parameters.
#[derive(Debug, Clone)]
pub struct Template {
    /// Where it was read ([`super::templates::File`]), for messages.
    pub path: PathBuf,
    pub body: String,
    pub parameters: Vec<Declared>,
}

impl Template {
    /// Reads the names, defaults and allowed values of the `Parameters` of
    /// `body`, the template read from `path`.
    pub fn parse(path: &Path, body: String) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let document: Value = serde_yaml::from_str(&body)
            .map_err(|e| ConfigError::new(&shown, format!("not valid YAML: {e}"), "fix the template"))?;
        let mut parameters = Vec::new();
        if let Some(Value::Mapping(declared)) = document.get("Parameters") {
            for (name, spec) in declared {
                let name = scalar(name)
                    .ok_or_else(|| ConfigError::new(&shown, "a parameter name is not a string", "fix the template"))?;
                let default = spec.get("Default").and_then(scalar);
                let allowed = match spec.get("AllowedValues") {
                    Some(Value::Sequence(values)) => values.iter().filter_map(scalar).collect(),
                    _ => Vec::new(),
                };
                let range = (spec.get("MinValue").and_then(scalar), spec.get("MaxValue").and_then(scalar));
                parameters.push(Declared { name, default, allowed, range });
            }
        }
        Ok(Self { path: path.to_path_buf(), body, parameters })
    }

    fn declares(&self, name: &str) -> bool {
        self.parameters.iter().any(|p| p.name == name)
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parameter values by name, merged from the file and the overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values(BTreeMap<String, String>);

impl Values {
    /// Reads a flat JSON object of parameter values (strings, numbers or booleans).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                path.display().to_string(),
                format!("cannot read the parameters file: {e}"),
                "pass --env dev or prod, or --params FILE",
            )
        })?;
        Self::from_text(path, &text)
    }

    /// As [`Values::load`], with the file's text already read.
    pub fn from_text(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse(text).map_err(|problem| {
            ConfigError::new(
                path.display().to_string(),
                problem,
                "it must be one flat JSON object of \"Name\": \"value\"",
            )
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let document: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let serde_json::Value::Object(object) = document else {
            return Err("the top level is not a JSON object".into());
        };
        let mut values = BTreeMap::new();
        for (name, value) in object {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => return Err(format!("the value of {name} is {}, not a string", kind(&other))),
            };
            values.insert(name, text);
        }
        Ok(Self(values))
    }

    /// Applies `KEY=VALUE` overrides (already split by [`parse_override`]).
    pub fn apply(&mut self, overrides: &[(String, String)]) {
        for (name, value) in overrides {
            self.0.insert(name.clone(), value.clone());
        }
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(name.to_owned(), value.into());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Checks every value against the templates before anything is changed:
    /// each name is declared by some template, each value is allowed, and
    /// every parameter without a default has a value (or is one the tool
    /// supplies or discovers itself).
    pub fn check(&self, templates: &[&Template]) -> Result<(), ConfigError> {
        for name in self.0.keys() {
            if !templates.iter().any(|t| t.declares(name)) {
                let files: Vec<String> = templates.iter().map(|t| file_name(&t.path)).collect();
                return Err(ConfigError::new(
                    name,
                    format!("unknown parameter: no template declares it ({})", files.join(", ")),
                    "check the spelling in the parameters file or --param",
                ));
            }
        }
        for template in templates {
            for declared in &template.parameters {
                if SUPPLIED.contains(&declared.name.as_str()) || DISCOVERED.contains(&declared.name.as_str()) {
                    continue;
                }
                self.value_for(template, declared)?;
            }
        }
        Ok(())
    }

    /// The parameter list for one template: only the names it declares.
    pub fn for_template(&self, template: &Template) -> Result<Vec<(String, String)>, ConfigError> {
        template.parameters.iter().map(|d| Ok((d.name.clone(), self.value_for(template, d)?))).collect()
    }

    fn value_for(&self, template: &Template, declared: &Declared) -> Result<String, ConfigError> {
        let value = match (self.get(&declared.name), &declared.default) {
            (Some(value), _) => value.to_owned(),
            (None, Some(default)) => default.clone(),
            (None, None) => {
                return Err(ConfigError::new(
                    &declared.name,
                    format!("missing required parameter of {}", file_name(&template.path)),
                    format!("set it in the parameters file or pass --param {}=VALUE", declared.name),
                ));
            }
        };
        if !declared.allowed.is_empty() && !declared.allowed.contains(&value) {
            return Err(ConfigError::new(
                &declared.name,
                format!("{value:?} is not allowed"),
                format!("use one of: {}", declared.allowed.join(", ")),
            ));
        }
        check_range(declared, &value)?;
        Ok(value)
    }
}

/// A value within the parameter's `MinValue`..`MaxValue`, if it has them.
fn check_range(declared: &Declared, value: &str) -> Result<(), ConfigError> {
    let (min, max) = &declared.range;
    if min.is_none() && max.is_none() {
        return Ok(());
    }
    let bounds = format!("{}..{}", min.as_deref().unwrap_or(""), max.as_deref().unwrap_or(""));
    let fix = format!("use a number in {bounds} (the template's MinValue..MaxValue)");
    let number: f64 = value
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(&declared.name, format!("{value:?} is not a number"), fix.clone()))?;
    let below = min.as_deref().and_then(|m| m.parse::<f64>().ok()).is_some_and(|m| number < m);
    let above = max.as_deref().and_then(|m| m.parse::<f64>().ok()).is_some_and(|m| number > m);
    if below || above {
        return Err(ConfigError::new(&declared.name, format!("{value} is outside {bounds}"), fix));
    }
    Ok(())
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
        _ => "a scalar",
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Splits a `--param KEY=VALUE` argument (clap value parser).
pub fn parse_override(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(yaml: &str) -> Template {
        Template::parse(Path::new("t.yaml"), yaml.to_owned()).unwrap()
    }

    const YAML: &str = "Parameters:\n  KeyName: {Type: String}\n  Env: {Type: String, Default: dev, AllowedValues: [dev, prod]}\n  Port: {Type: Number, Default: 8443}\n  CodeKey: {Type: String}\nResources:\n  X: {Type: AWS::SNS::Topic, Properties: {TopicName: !Ref KeyName}}\n";

    #[test]
    fn reads_declarations_with_short_form_tags() {
        let t = template(YAML);
        let names: Vec<&str> = t.parameters.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["KeyName", "Env", "Port", "CodeKey"]);
        assert_eq!(t.parameters[1].allowed, ["dev", "prod"]);
        assert_eq!(t.parameters[2].default.as_deref(), Some("8443"));
    }

    #[test]
    fn empty_required_value_is_named() {
        let t = template(YAML);
        let values = Values::parse(r#"{"KeyName": "", "Env": "dev"}"#).unwrap();
        let error = values.check(&[&t]).unwrap_err();
        assert_eq!(error.key, "KeyName");
        assert!(error.problem.contains("missing required"), "{error}");
    }

    #[test]
    fn the_network_may_be_left_to_discovery() {
        let t = template("Parameters:\n  VpcId: {Type: String}\n  PublicSubnets: {Type: String}\n");
        let mut values = Values::parse(r#"{"VpcId": "", "PublicSubnets": ""}"#).unwrap();
        values.check(&[&t]).unwrap();
        assert!(values.for_template(&t).is_err(), "still to be found");
        values.set("VpcId", "vpc-1");
        values.set("PublicSubnets", "subnet-1,subnet-2");
        assert_eq!(values.for_template(&t).unwrap()[1], ("PublicSubnets".into(), "subnet-1,subnet-2".into()));
    }

    #[test]
    fn supplied_names_may_be_empty_until_publishing() {
        let t = template(YAML);
        let mut values = Values::parse(r#"{"KeyName": "key-1", "CodeKey": ""}"#).unwrap();
        values.check(&[&t]).unwrap();
        assert!(values.for_template(&t).is_err(), "CodeKey still empty");
        values.set("CodeKey", "lambda/abc.zip");
        let list = values.for_template(&t).unwrap();
        assert!(list.contains(&("Env".into(), "dev".into())), "default used: {list:?}");
        assert!(list.contains(&("Port".into(), "8443".into())));
    }

    #[test]
    fn unknown_and_disallowed_values_are_refused() {
        let t = template(YAML);
        let mut values = Values::parse(r#"{"KeyName": "key-1"}"#).unwrap();
        values.apply(&[("Envv".into(), "prod".into())]);
        assert_eq!(values.check(&[&t]).unwrap_err().key, "Envv");
        let mut values = Values::parse(r#"{"KeyName": "key-1"}"#).unwrap();
        values.apply(&[("Env".into(), "qa".into())]);
        let error = values.check(&[&t]).unwrap_err();
        assert_eq!(error.key, "Env");
        assert!(error.fix.contains("dev, prod"));
    }

    #[test]
    fn numbers_outside_min_and_max_are_refused() {
        let t = template("Parameters:\n  Idle: {Type: Number, Default: 15, MinValue: 5, MaxValue: 1440}\n");
        let refused = |value: &str| {
            let mut values = Values::parse("{}").unwrap();
            values.apply(&[("Idle".into(), value.into())]);
            values.check(&[&t]).err().map(|e| e.problem)
        };
        assert_eq!(refused("5"), None);
        assert_eq!(refused("1440"), None);
        assert!(refused("1").unwrap().contains("outside 5..1440"));
        assert!(refused("1441").unwrap().contains("outside 5..1440"));
        assert!(refused("soon").unwrap().contains("not a number"));
    }

    #[test]
    fn malformed_files_say_what_is_wrong() {
        assert!(Values::parse("{").unwrap_err().contains("not valid JSON"));
        assert!(Values::parse("[]").unwrap_err().contains("not a JSON object"));
        assert!(Values::parse(r#"{"A": [1]}"#).unwrap_err().contains("A is a list"));
        assert_eq!(Values::parse(r#"{"A": 5, "B": true}"#).unwrap().get("A"), Some("5"));
    }

    #[test]
    fn overrides_split_on_the_first_equals_sign() {
        assert_eq!(parse_override("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_override("novalue").is_err());
        assert!(parse_override("=x").is_err());
    }
}
