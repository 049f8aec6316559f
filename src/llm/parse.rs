//! Tolerant parsing of LLM replies: code fences, prose around the JSON, several shapes.

use serde_json::Value;

/// The JSON inside a reply: the whole text, else a fenced block, else the outermost `[…]` / `{…}`.
fn json_in(reply: &str) -> Option<Value> {
    let t = reply.trim();
    if let Ok(v) = serde_json::from_str(t) {
        return Some(v);
    }
    if let Some(start) = t.find("```") {
        let body = &t[start + 3..];
        let body = body.trim_start_matches(|c: char| c.is_alphanumeric()); // ```json
        if let Some(end) = body.find("```")
            && let Ok(v) = serde_json::from_str(body[..end].trim())
        {
            return Some(v);
        }
    }
    for (open, close) in [('[', ']'), ('{', '}')] {
        if let (Some(a), Some(b)) = (t.find(open), t.rfind(close))
            && a < b
            && let Ok(v) = serde_json::from_str(&t[a..=b])
        {
            return Some(v);
        }
    }
    None
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(xs) => xs.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Keywords from a reply: a JSON list of strings, `{"keywords": […]}`, or a WHO/WHEN/WHY object
/// of lists. Lower-cased, trimmed, de-duplicated, order kept. None when no JSON is found.
pub fn keywords(reply: &str) -> Option<Vec<String>> {
    let v = json_in(reply)?;
    let v = match &v {
        Value::Object(m) if m.contains_key("keywords") => m["keywords"].clone(),
        Value::Array(_) | Value::Object(_) => v,
        _ => return None,
    };
    let mut raw = Vec::new();
    strings(&v, &mut raw);
    let mut out: Vec<String> = Vec::new();
    for k in raw {
        let k = k
            .trim()
            .trim_matches(|c: char| c == '.' || c == ',')
            .to_lowercase();
        // "…", "-", "" carry nothing to search with
        if k.chars().any(char::is_alphanumeric) && !out.contains(&k) {
            out.push(k);
        }
    }
    Some(out)
}

/// A description summary: a JSON list of phrases (joined by "; "), `{"summary": …}`, or plain
/// text. None when the reply is empty.
pub fn summary(reply: &str) -> Option<String> {
    let text = match json_in(reply) {
        Some(Value::String(s)) => s,
        Some(v @ (Value::Array(_) | Value::Object(_))) => {
            let mut parts = Vec::new();
            strings(&v, &mut parts);
            parts
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        }
        _ => reply.trim().trim_matches('`').trim().to_string(),
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_list() {
        assert_eq!(
            keywords(r#"["Daughter", "after the gym", "daughter"]"#).unwrap(),
            vec!["daughter", "after the gym"]
        );
    }

    #[test]
    fn fenced_and_surrounded_by_prose() {
        let r = "Sure! Here are the keywords:\n```json\n[\"thin hair\", \"winter\"]\n```\nHope this helps.";
        assert_eq!(keywords(r).unwrap(), vec!["thin hair", "winter"]);
        let r = "Keywords: [\"dry skin\"] — done";
        assert_eq!(keywords(r).unwrap(), vec!["dry skin"]);
    }

    #[test]
    fn who_when_why_object_and_keywords_key() {
        let r = r#"{"who": ["husband"], "when": ["after shaving"], "why": ["razor bumps"]}"#;
        assert_eq!(
            keywords(r).unwrap(),
            vec!["husband", "after shaving", "razor bumps"]
        );
        assert_eq!(keywords(r#"{"keywords": ["a b"]}"#).unwrap(), vec!["a b"]);
        // placeholders carry nothing
        assert_eq!(
            keywords(r#"{"keywords": ["…", "-", " ", "Coconut"]}"#).unwrap(),
            vec!["coconut"]
        );
    }

    #[test]
    fn no_json_is_unparseable() {
        assert_eq!(keywords("I cannot help with that."), None);
        assert_eq!(keywords("42"), None);
    }

    #[test]
    fn summaries_accept_text_or_lists() {
        assert_eq!(summary("  Gentle   shampoo.\n").unwrap(), "Gentle shampoo.");
        assert_eq!(
            summary(r#"["gentle", "for curly hair"]"#).unwrap(),
            "gentle; for curly hair"
        );
        assert_eq!(summary("   "), None);
    }
}
