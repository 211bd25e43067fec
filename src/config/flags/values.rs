//! pflag's value syntaxes that clap does not have: Go booleans, `--feature-gates` maps and
//! klog's `--vmodule` lists.

use std::collections::BTreeMap;

/// Go's `strconv.ParseBool`: `1 t T TRUE true True` and `0 f F FALSE false False`.
pub fn parse_go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean (true or false)")),
    }
}

/// `--feature-gates` values (each `Name=bool,Name=bool`; later ones win), merged in order.
pub fn parse_feature_gates(values: &[String]) -> Result<BTreeMap<String, bool>, String> {
    let mut gates = BTreeMap::new();
    for pair in values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not Name=true|false"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("{pair:?} has no gate name"));
        }
        let enabled = parse_go_bool(value.trim()).map_err(|e| format!("{name}: {e}"))?;
        gates.insert(name.to_string(), enabled);
    }
    Ok(gates)
}

/// klog's `--vmodule`: `pattern=N,…` into (pattern, level) pairs.
pub fn parse_vmodule(text: &str) -> Result<Vec<(String, u32)>, String> {
    let mut items = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (pattern, level) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not pattern=N"))?;
        let level = level.trim().parse().map_err(|_| format!("{pair:?}: {level:?} is not a verbosity level"))?;
        if pattern.trim().is_empty() {
            return Err(format!("{pair:?} has no file pattern"));
        }
        items.push((pattern.trim().to_string(), level));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_booleans() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Ok(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Ok(false));
        }
        assert!(parse_go_bool("yes").unwrap_err().contains("\"yes\""));
    }

    #[test]
    fn feature_gates_merge_in_order() {
        let gates =
            parse_feature_gates(&["A=true,B=false".into(), " C = 1 ".into(), "A=false".into(), "".into()]).unwrap();
        assert_eq!(gates, BTreeMap::from([("A".into(), false), ("B".into(), false), ("C".into(), true)]));
        assert!(parse_feature_gates(&["A".into()]).unwrap_err().contains("Name=true|false"));
        assert!(parse_feature_gates(&["A=maybe".into()]).unwrap_err().contains("A:"));
        assert!(parse_feature_gates(&["=true".into()]).is_err());
    }

    #[test]
    fn vmodule_lists() {
        assert_eq!(parse_vmodule("proxier*=4, server=2").unwrap(), [("proxier*".into(), 4), ("server".into(), 2)]);
        assert!(parse_vmodule("proxier").is_err());
        assert!(parse_vmodule("proxier=x").is_err());
        assert!(parse_vmodule("=3").is_err());
    }
}
