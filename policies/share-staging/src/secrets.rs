//! The one secret classifier every sanitizer uses (S5.4, S5.5): `~/.claude.json`,
//! `settings.json` / `settings.local.json` and the git configuration all ask the same three
//! questions, so a secret one of them would catch cannot slip through another.
//!
//! - [`is_secret_key`]: does a *name* (JSON key, git key, environment variable, flag, query
//!   parameter, header name) mark its value as a secret? Names are split into words (camelCase,
//!   `_ - . / :` and spaces) so that `auth` matches `X-Auth` and `basic_auth` but not `author`
//!   or `authority`, and `token` matches `githubToken` but not `tokenizer` or `max_tokens`.
//! - [`is_secret_value`]: does a *value* carry a secret whatever its name? URLs with a password
//!   or a token in the userinfo or a secret-named query parameter, `Authorization:` / `Bearer`
//!   headers, `name=value` pairs and `--flag value` arguments with a secret name, PEM private
//!   keys, JWTs and the well-known token prefixes (`sk-ant-`, `ghp_`, `github_pat_`, `glpat-`,
//!   `xoxb-`, `AKIA…`).
//! - [`is_credential_command_key`]: is a setting a helper command that prints credentials
//!   (`apiKeyHelper`, `awsAuthRefresh`, `awsCredentialExport`, `otelHeadersHelper`, MCP
//!   `headersHelper`, …)? Such commands are host paths and their whole purpose is to hand out
//!   secrets, so they never cross.
//!
//! On top of those, [`clean_args`] filters an argument list and [`scrub_json`] walks a whole
//! JSON document. The table of cases the classifier must get right (and the near-misses it
//! must leave alone) is `testdata/secret-corpus.json`, checked by the tests below.
//!
//! Pure string work: no I/O, no regex engine, nothing that depends on the host.

use serde_json::Value;

/// Well-known token prefixes and the least number of token characters that must follow, so a
/// word that merely starts like one (`sk-1`, `xoxo`) is not taken for a token.
const TOKEN_PREFIXES: &[(&str, usize)] = &[
    ("sk-ant-", 8),   // Anthropic API keys and session keys
    ("sk-", 20),      // OpenAI-style keys
    ("sk_live_", 16), // Stripe
    ("sk_test_", 16), // Stripe
    ("rk_live_", 16), // Stripe restricted keys
    ("github_pat_", 20),
    ("ghp_", 20),    // GitHub personal access token
    ("gho_", 20),    // GitHub OAuth token
    ("ghu_", 20),    // GitHub user-to-server token
    ("ghs_", 20),    // GitHub server-to-server token
    ("ghr_", 20),    // GitHub refresh token
    ("glpat-", 16),  // GitLab personal access token
    ("gldt-", 16),   // GitLab deploy token
    ("glrt-", 16),   // GitLab runner token
    ("glptt-", 16),  // GitLab pipeline trigger token
    ("xoxb-", 10),   // Slack bot token
    ("xoxp-", 10),   // Slack user token
    ("xoxa-", 10),   // Slack app token
    ("xoxr-", 10),   // Slack refresh token
    ("xoxs-", 10),   // Slack session token
    ("xoxe-", 10),   // Slack rotating token
    ("xapp-", 10),   // Slack app-level token
    ("AIza", 30),    // Google API key
    ("ya29.", 20),   // Google OAuth access token
    ("npm_", 30),    // npm access token
    ("pypi-", 30),   // PyPI API token
    ("hf_", 30),     // Hugging Face token
    ("glc_", 20),    // Grafana Cloud token
    ("dop_v1_", 20), // DigitalOcean token
    ("shpat_", 20),  // Shopify access token
];

/// AWS access key ids: one of these, then exactly 16 upper-case letters or digits.
const AWS_KEY_PREFIXES: &[&str] = &["AKIA", "ASIA", "AGPA", "AIDA", "AROA"];

/// Words after (or before) `token` that make it a count, not a credential (`tokenLimit`,
/// `max_token`).
const TOKEN_COUNT_WORDS: &[&str] = &[
    "count", "counts", "limit", "limits", "budget", "usage", "length", "size", "window",
    "estimate", "max", "min", "total", "num", "input", "output", "per",
];

/// Concatenations that name a secret key even when the words were written together
/// (`apikey`, `API_KEY`, `accessKeyId`, `x-api-key`).
const SECRET_COMPOUNDS: &[&str] = &[
    "apikey",
    "privatekey",
    "accesskey",
    "secretkey",
    "sessionkey",
    "accountkey",
    "signingkey",
    "encryptionkey",
    "masterkey",
    "clientkey",
];

/// The words of a name: split at `_ - . / : @ space` and at lower→upper case changes,
/// lower-cased. `X-API-Key` → `x api key`, `githubToken` → `github token`.
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn is_token_word(words: &[String], index: usize) -> bool {
    let word = words[index].as_str();
    if !word.ends_with("token") {
        return false;
    }
    if word == "token" {
        let before = index.checked_sub(1).map(|i| words[i].as_str());
        let after = words.get(index + 1).map(String::as_str);
        let counting = |w: Option<&str>| w.is_some_and(|w| TOKEN_COUNT_WORDS.contains(&w));
        return !counting(before) && !counting(after);
    }
    true
}

/// Whether a name marks its value as a secret: a token, secret, password, API key, private
/// key, credential, cookie or an `auth` / `Authorization` value. See the module docs for how
/// near-misses such as `tokenizer`, `max_tokens`, `author` and `oauthAccount` are told apart.
pub fn is_secret_key(name: &str) -> bool {
    let words = words(name);
    let joined: String = words.concat();
    let word_hit = words.iter().enumerate().any(|(index, word)| {
        let w = word.as_str();
        is_token_word(&words, index)
            || (w.contains("secret") && !w.contains("secretar"))
            || w.contains("password")
            || w.contains("passwd")
            || w.contains("passphrase")
            || w.contains("passcode")
            || matches!(w, "pass" | "pw" | "smtppass")
            || w.contains("credential")
            || w == "auth"
            || (w.ends_with("auth") && w != "oauth")
            || w.ends_with("authorization")
            || w.ends_with("cookie")
            || w == "cookies"
            || matches!(w, "bearer" | "pat" | "jwt")
    });
    word_hit || SECRET_COMPOUNDS.iter().any(|c| joined.contains(c))
}

/// Whether a setting names a helper command whose job is to print credentials:
/// `apiKeyHelper`, `proxyAuthHelper`, `otelHeadersHelper`, `headersHelper`,
/// `credentialHelper`, `awsAuthRefresh`, `awsCredentialExport`, `gcpAuthRefresh`, ….
pub fn is_credential_command_key(name: &str) -> bool {
    let words = words(name);
    let joined: String = words.concat();
    words.last().is_some_and(|w| w.ends_with("helper"))
        || joined.ends_with("authrefresh")
        || joined.ends_with("credentialexport")
        || joined.ends_with("credentialprocess")
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

/// A reference to a variable (`$TOKEN`, `${TOKEN}`), which names a secret but is not one.
fn is_variable_reference(value: &str) -> bool {
    let body = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .or_else(|| value.strip_prefix('$'));
    body.is_some_and(|b| !b.is_empty() && b.chars().all(|c| c.is_alphanumeric() || c == '_'))
}

/// A well-known token prefix starting at a word boundary somewhere in `text`.
fn has_token_prefix(text: &str) -> bool {
    let bytes = text.as_bytes();
    for (start, _) in text.char_indices() {
        if start > 0 && (bytes[start - 1] as char).is_ascii_alphanumeric() {
            continue;
        }
        let rest = &text[start..];
        for (prefix, min_body) in TOKEN_PREFIXES {
            if let Some(body) = rest.strip_prefix(prefix) {
                let length = body
                    .chars()
                    .take_while(|c| is_token_char(*c) || *c == '.')
                    .count();
                if length >= *min_body {
                    return true;
                }
            }
        }
        for prefix in AWS_KEY_PREFIXES {
            if let Some(body) = rest.strip_prefix(prefix) {
                let id: Vec<char> = body.chars().take(17).collect();
                let exact = id.len() >= 16
                    && id[..16]
                        .iter()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                    && id.get(16).is_none_or(|c| !c.is_ascii_alphanumeric());
                if exact {
                    return true;
                }
            }
        }
        if let Some(body) = rest.strip_prefix("eyJ") {
            // A JWT: base64url header, `.`, a base64url payload that is JSON too.
            let header = body.chars().take_while(|c| is_token_char(*c)).count();
            let after = &body[header..];
            if header >= 10
                && after.starts_with(".eyJ")
                && after[4..].chars().take_while(|c| is_token_char(*c)).count() >= 10
            {
                return true;
            }
        }
    }
    false
}

/// Percent-decoding for query parameter names (`api%5Fkey`); invalid escapes stay as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2))
        {
            // Two hex digits are at most 0xff.
            out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One URL found in a text: where its authority and the rest (path, query) are.
struct UrlParts<'a> {
    /// `user:password` or `token`, when the authority has an `@`.
    userinfo: Option<&'a str>,
    /// The query string after `?`, without the fragment.
    query: Option<&'a str>,
}

fn url_end(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`')
}

/// Every `scheme://…` in `text`.
fn urls(text: &str) -> Vec<UrlParts<'_>> {
    let mut found = Vec::new();
    let mut search = 0;
    while let Some(offset) = text[search..].find("://") {
        let at = search + offset;
        search = at + 3;
        let scheme_ok = text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        if !scheme_ok {
            continue;
        }
        let rest = &text[at + 3..];
        let end = rest.find(url_end).unwrap_or(rest.len());
        let url = &rest[..end];
        let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        let authority = &url[..authority_end];
        let userinfo = authority.rsplit_once('@').map(|(info, _)| info);
        let query = url
            .split_once('?')
            .map(|(_, q)| q.split('#').next().unwrap_or(q));
        found.push(UrlParts { userinfo, query });
    }
    found
}

/// Whether a URL's userinfo is a credential: a password, or a user name that is a token.
fn secret_userinfo(userinfo: &str) -> bool {
    match userinfo.split_once(':') {
        Some((_, password)) => !password.is_empty() && !is_variable_reference(password),
        None => {
            let user = percent_decode(userinfo);
            let letters = user.chars().any(|c| c.is_ascii_alphabetic());
            let digits = user.chars().any(|c| c.is_ascii_digit());
            has_token_prefix(&user)
                || (user.len() >= 20 && letters && digits && user.chars().all(is_token_char))
        }
    }
}

fn secret_query_parameter(pair: &str) -> bool {
    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
    !value.is_empty() && is_secret_key(&percent_decode(name)) && !is_variable_reference(value)
}

fn secret_url(url: &UrlParts<'_>) -> bool {
    url.userinfo.is_some_and(secret_userinfo)
        || url
            .query
            .is_some_and(|q| q.split('&').any(secret_query_parameter))
}

/// A `name=value` or `name: value` piece whose name is secret and whose value is present.
fn secret_assignment(piece: &str, next: Option<&str>) -> bool {
    if let Some((name, value)) = piece.split_once('=') {
        let name = name.trim_start_matches('-');
        return !name.is_empty()
            && !value.is_empty()
            && is_secret_key(name)
            && !is_variable_reference(value);
    }
    if let Some((name, value)) = piece.split_once(':') {
        // `scheme://…` is a URL, not a header.
        if value.starts_with("//") {
            return false;
        }
        let value = if value.is_empty() {
            next.unwrap_or("")
        } else {
            value
        };
        return !name.is_empty()
            && !value.is_empty()
            && is_secret_key(name)
            && !is_variable_reference(value);
    }
    false
}

/// Whether a command-line flag (`--api-key`, `-token`) names a secret that follows it.
fn is_secret_flag(word: &str) -> bool {
    let name = word.trim_start_matches('-');
    word.starts_with('-') && !name.is_empty() && !name.starts_with("no-") && is_secret_key(name)
}

/// Whether a value carries a secret, whatever the name it is stored under. Looks at URLs
/// (userinfo, query), headers and `name=value` pairs, `--flag value` pairs, PEM private keys,
/// JWTs and well-known token prefixes; ordinary paths, URLs, commands and ids stay.
pub fn is_secret_value(text: &str) -> bool {
    if text.contains("PRIVATE KEY-----") || has_token_prefix(text) {
        return true;
    }
    if urls(text).iter().any(secret_url) {
        return true;
    }
    let pieces: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '&' | '?' | '"' | '\''))
        .filter(|p| !p.is_empty())
        .collect();
    pieces.iter().enumerate().any(|(i, piece)| {
        let next = pieces.get(i + 1).copied();
        let bearer = piece.eq_ignore_ascii_case("bearer")
            && next.is_some_and(|n| {
                n.len() >= 8 && n.chars().all(|c| is_token_char(c) || "._~+/=".contains(c))
            });
        let flag = is_secret_flag(piece)
            && next.is_some_and(|n| !n.starts_with('-') && !is_variable_reference(n));
        bearer || flag || secret_assignment(piece, next)
    })
}

/// A URL with its credentials taken out (userinfo removed, secret query parameters dropped),
/// or `None` when `text` is not one URL or still carries a secret afterwards (a token in the
/// path). Lets an MCP server's `url` or a proxy setting keep working minus the credential.
pub fn redact_url(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'));
    if !scheme_ok || text.contains(url_end) {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (tail, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (before_fragment, None),
    };
    let mut clean = format!("{scheme}://{host}{path}");
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !secret_query_parameter(pair) && !is_secret_value(pair))
            .collect();
        if !kept.is_empty() {
            clean.push('?');
            clean.push_str(&kept.join("&"));
        }
    }
    if let Some(fragment) = fragment {
        clean.push('#');
        clean.push_str(fragment);
    }
    (!is_secret_value(&clean)).then_some(clean)
}

/// An argument list without its secrets: `--token X` loses both words, `--token=X` its one
/// word, a word that is itself a secret (`Authorization: Bearer …`, `ghp_…`) goes together
/// with the flag before it; a URL with credentials is kept without them.
pub fn clean_args(args: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg.starts_with('-') && !arg.contains('=') && is_secret_flag(arg) {
            match args.get(i + 1) {
                Some(value) if !value.starts_with('-') && !is_variable_reference(value) => {
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        if is_secret_value(arg) {
            if let Some(clean) = redact_url(arg) {
                out.push(clean);
            } else if out
                .last()
                .is_some_and(|flag| flag.starts_with('-') && flag != "--" && !flag.contains('='))
            {
                // The flag this value belonged to would swallow the next argument instead.
                out.pop();
            }
            i += 1;
            continue;
        }
        out.push(arg.clone());
        i += 1;
    }
    out
}

/// Removes every secret from a JSON document, wherever it nests: keys that name a secret
/// (booleans and nulls stay: they carry none), helper commands that print credentials,
/// string values that carry one (a URL keeps everything but its credentials), secrets in
/// argument lists. Structure and every other value stay.
pub fn scrub_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, child| {
                if is_credential_command_key(key) {
                    return false;
                }
                if is_secret_key(key) {
                    return matches!(child, Value::Bool(_) | Value::Null);
                }
                true
            });
            let mut gone = Vec::new();
            for (key, child) in map.iter_mut() {
                if let Value::String(text) = child {
                    if is_secret_value(text) {
                        match redact_url(text) {
                            Some(clean) => *text = clean,
                            None => gone.push(key.clone()),
                        }
                    }
                } else {
                    scrub_json(child);
                }
            }
            for key in gone {
                map.remove(&key);
            }
        }
        Value::Array(items) => {
            if items.iter().all(Value::is_string) {
                let args: Vec<String> = items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                *items = clean_args(&args).into_iter().map(Value::String).collect();
            } else {
                items.retain(|item| !item.as_str().is_some_and(is_secret_value));
                items.iter_mut().for_each(scrub_json);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    /// `testdata/secret-corpus.json`: the cases every sanitizer relies on.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Corpus {
        secret_keys: Vec<String>,
        plain_keys: Vec<String>,
        credential_commands: Vec<String>,
        plain_settings: Vec<String>,
        secret_values: Vec<String>,
        plain_values: Vec<String>,
        args: Vec<ArgsCase>,
        urls: Vec<UrlCase>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ArgsCase {
        given: Vec<String>,
        kept: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct UrlCase {
        given: String,
        kept: Option<String>,
    }

    fn corpus() -> Corpus {
        serde_json::from_str(include_str!("../testdata/secret-corpus.json"))
            .expect("the corpus parses")
    }

    /// S5.4, S5.5: every secret name in the corpus is flagged, no near-miss is.
    #[test]
    fn corpus_key_names_are_classified() {
        let corpus = corpus();
        let missed: Vec<&String> = corpus
            .secret_keys
            .iter()
            .filter(|k| !is_secret_key(k))
            .collect();
        assert!(missed.is_empty(), "secret names not flagged: {missed:?}");
        let flagged: Vec<&String> = corpus
            .plain_keys
            .iter()
            .filter(|k| is_secret_key(k))
            .collect();
        assert!(flagged.is_empty(), "near-misses flagged: {flagged:?}");
    }

    /// S5.4: helper commands that print credentials are recognised; other settings are not.
    #[test]
    fn corpus_credential_commands_are_classified() {
        let corpus = corpus();
        for key in &corpus.credential_commands {
            assert!(is_credential_command_key(key), "{key}");
        }
        for key in &corpus.plain_settings {
            assert!(!is_credential_command_key(key), "{key}");
            assert!(!is_secret_key(key), "{key}");
        }
    }

    /// S5.4, S5.5: secret values are flagged whatever their name; ordinary values are not.
    #[test]
    fn corpus_values_are_classified() {
        let corpus = corpus();
        let missed: Vec<&String> = corpus
            .secret_values
            .iter()
            .filter(|v| !is_secret_value(v))
            .collect();
        assert!(missed.is_empty(), "secret values not flagged: {missed:?}");
        let flagged: Vec<&String> = corpus
            .plain_values
            .iter()
            .filter(|v| is_secret_value(v))
            .collect();
        assert!(flagged.is_empty(), "plain values flagged: {flagged:?}");
    }

    /// S5.4: a secret-named flag loses its value, `--flag=value` goes whole, the rest stays.
    #[test]
    fn corpus_argument_lists_lose_exactly_their_secrets() {
        for case in corpus().args {
            assert_eq!(clean_args(&case.given), case.kept, "{:?}", case.given);
        }
    }

    /// S5.4: a URL keeps everything but its credentials, or goes when the path is a secret.
    #[test]
    fn corpus_urls_are_redacted() {
        for case in corpus().urls {
            assert_eq!(redact_url(&case.given), case.kept, "{}", case.given);
        }
    }

    #[test]
    fn scrub_json_removes_secrets_wherever_they_nest_and_keeps_structure() {
        let mut doc = json!({
            "model": "opus",
            "maxTokens": 4096,
            "nested": [{"auth": {"type": "basic"}, "authority": "https://login.example.org"}],
            "apiKeyHelper": "/home/alice/bin/key.sh",
            "servers": {"x": {"url": "https://u:pw@mcp.example.org/sse?token=abc&v=2",
                              "args": ["--api-key", "k1", "--port", "3000", "--token=t2"]}},
            "hasSecret": true,
            "note": "Bearer abcdefghijklmnop"
        });
        scrub_json(&mut doc);
        assert_eq!(
            doc,
            json!({
                "model": "opus",
                "maxTokens": 4096,
                "nested": [{"authority": "https://login.example.org"}],
                "servers": {"x": {"url": "https://mcp.example.org/sse?v=2",
                                  "args": ["--port", "3000"]}},
                "hasSecret": true
            })
        );
    }
}
