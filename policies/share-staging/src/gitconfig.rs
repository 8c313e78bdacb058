//! Sanitizing the global git configuration (S5.5).
//!
//! Input is what `git config --global --includes --list` gives (includes already resolved,
//! so `include.*` / `includeIf.*` entries are dropped rather than copied as paths). Output
//! keeps identity, aliases, colours and the like, and drops:
//! - every `credential.*` entry and HTTP settings that carry secrets or host files
//!   (`http.*.extraHeader`, cookie file, client certificates);
//! - every value that points into a package store (`/nix/store/…`);
//! - program-valued settings (editor, pager, ssh command, diff/merge drivers, filters,
//!   hooks path, fsmonitor…) unless the program is one the guest image ships;
//! - signing: `user.signingKey`, all `gpg.*`; `commit.gpgSign` and `tag.gpgSign` are forced
//!   off;
//! - `core.excludesFile`: the excludes file is staged by content at git's default location;
//! - every entry the shared secret classifier ([`crate::secrets`]) flags, by the name
//!   (`github.token`, `hub.oauthtoken`, `sendemail.smtppass`), by the subsection (a token in a
//!   `url.<base>.insteadOf` base or an `http.<url>.*` URL) or by the value (`http.proxy` with a
//!   password, an alias that sends an `Authorization` header, a token anywhere).

use crate::secrets::{is_secret_key, is_secret_value};

/// Programs the guest image ships that a program-valued setting may keep naming.
const GUEST_PROGRAMS: &[&str] = &[
    "vim", "vi", "less", "more", "cat", "git", "zsh", "sh", "bash",
];

/// Split `section[.subsection].name` (subsection may contain dots).
fn split_key(key: &str) -> Option<(&str, Option<&str>, &str)> {
    let (section, rest) = key.split_once('.')?;
    match rest.rsplit_once('.') {
        Some((subsection, name)) => Some((section, Some(subsection), name)),
        None => Some((section, None, rest)),
    }
}

/// Whether the setting's value is a program (or path) run on the host.
fn is_program_valued(section: &str, subsection: Option<&str>, name: &str) -> bool {
    let section = section.to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    matches!(
        (section.as_str(), subsection, name.as_str()),
        (
            "core",
            None,
            "editor" | "pager" | "sshcommand" | "fsmonitor" | "askpass" | "hookspath"
        ) | ("sequence", None, "editor")
            | ("diff", None, "external")
            | ("diff", Some(_), "command" | "textconv")
            | ("merge", Some(_), "driver")
            | ("filter", Some(_), "clean" | "smudge" | "process")
            | ("difftool" | "mergetool", Some(_), "cmd" | "path")
            | ("interactive", None, "difffilter")
            | ("pager", _, _)
    )
}

fn runs_guest_program(value: &str) -> bool {
    value
        .split_whitespace()
        .next()
        .is_some_and(|program| GUEST_PROGRAMS.contains(&program))
}

fn dropped(key: &str, value: &str) -> bool {
    let Some((section, subsection, name)) = split_key(key) else {
        return true;
    };
    let section_lc = section.to_ascii_lowercase();
    let name_lc = name.to_ascii_lowercase();
    if value.contains("/nix/store/") {
        return true;
    }
    if is_secret_key(name) || subsection.is_some_and(is_secret_value) || is_secret_value(value) {
        return true;
    }
    match section_lc.as_str() {
        "credential" | "include" | "includeif" | "gpg" => return true,
        "http"
            if matches!(
                name_lc.as_str(),
                "extraheader" | "cookiefile" | "sslcert" | "sslkey" | "sslcainfo" | "sslcapath"
            ) =>
        {
            return true;
        }
        _ => {}
    }
    match (section_lc.as_str(), subsection, name_lc.as_str()) {
        ("user", None, "signingkey") => return true,
        ("commit" | "tag", None, "gpgsign") => return true,
        ("core", None, "excludesfile") => return true,
        _ => {}
    }
    is_program_valued(section, subsection, name) && !runs_guest_program(value)
}

/// The entries that may cross, in order, plus the forced `gpgsign = false` pair.
pub fn sanitize(entries: &[(String, String)]) -> Vec<(String, String)> {
    let mut clean: Vec<(String, String)> = entries
        .iter()
        .filter(|(key, value)| !dropped(key, value))
        .cloned()
        .collect();
    clean.push(("commit.gpgsign".to_owned(), "false".to_owned()));
    clean.push(("tag.gpgsign".to_owned(), "false".to_owned()));
    clean
}

fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Renders entries as a git config file, one section header per run of equal sections.
pub fn render(entries: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut current: Option<(String, Option<String>)> = None;
    for (key, value) in entries {
        let Some((section, subsection, name)) = split_key(key) else {
            continue;
        };
        let header = (section.to_owned(), subsection.map(str::to_owned));
        if current.as_ref() != Some(&header) {
            match subsection {
                Some(sub) => out.push_str(&format!("[{section} {}]\n", quote(sub))),
                None => out.push_str(&format!("[{section}]\n")),
            }
            current = Some(header);
        }
        out.push_str(&format!("\t{name} = {}\n", quote(value)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn keys(clean: &[(String, String)]) -> Vec<&str> {
        clean.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn credentials_signing_and_store_paths_are_dropped() {
        let clean = sanitize(&entries(&[
            ("user.name", "Alice"),
            ("user.email", "a@example.org"),
            ("user.signingkey", "ABCDEF"),
            ("credential.helper", "store"),
            ("credential.https://example.org.username", "alice"),
            ("commit.gpgsign", "true"),
            ("gpg.format", "ssh"),
            ("gpg.ssh.program", "/usr/bin/ssh-keygen"),
            ("core.editor", "/nix/store/abc-vim/bin/vim"),
            ("alias.lg", "log --graph"),
            (
                "http.https://example.org.extraheader",
                "Authorization: Bearer x",
            ),
            ("include.path", "~/.gitconfig.local"),
            ("core.excludesfile", "/home/alice/.gitignore"),
        ]));
        assert_eq!(
            keys(&clean),
            [
                "user.name",
                "user.email",
                "alias.lg",
                "commit.gpgsign",
                "tag.gpgsign"
            ]
        );
        assert_eq!(clean[3].1, "false");
    }

    /// S5.5: tokens in `url.<base>.insteadOf` bases, extra headers, proxy userinfo and the
    /// secret-named keys of other tools go; identity, aliases and plain URLs stay.
    #[test]
    fn entries_the_secret_classifier_flags_are_dropped() {
        let clean = sanitize(&entries(&[
            ("user.name", "Alice"),
            ("alias.lg", "log --graph --author=alice"),
            (
                "alias.ship",
                "!curl -H 'Authorization: token ghp_0123456789abcdefghijABCDEFGHIJ012345' x",
            ),
            (
                "url.https://ghp_0123456789abcdefghijABCDEFGHIJ012345@github.com/.insteadof",
                "https://github.com/",
            ),
            (
                "url.https://oauth2:glpat-0123456789abcdefghij@gitlab.com/.insteadof",
                "gl:",
            ),
            ("url.git@github.com:.insteadof", "https://github.com/"),
            (
                "url.https://github.com/.insteadof",
                "https://alice:hunter2@github.com/",
            ),
            ("http.extraheader", "AUTHORIZATION: basic dXNlcjpwYXNz"),
            (
                "http.https://example.org.extraheader",
                "Authorization: Bearer x",
            ),
            ("http.proxy", "http://alice:hunter2@proxy.corp:3128"),
            ("http.https://user:pw@git.corp.sslverify", "false"),
            ("https.proxy", "http://proxy.corp:3128"),
            ("github.user", "alice"),
            ("github.token", "0123456789abcdef0123456789abcdef01234567"),
            ("hub.oauthtoken", "0123456789abcdef"),
            ("gitlab.token", "x"),
            ("sendemail.smtpuser", "alice@example.org"),
            ("sendemail.smtppass", "hunter2"),
            ("sendemail.smtpserver", "smtp.example.org"),
        ]));
        assert_eq!(
            keys(&clean),
            [
                "user.name",
                "alias.lg",
                "url.git@github.com:.insteadof",
                "https.proxy",
                "github.user",
                "sendemail.smtpuser",
                "sendemail.smtpserver",
                "commit.gpgsign",
                "tag.gpgsign"
            ]
        );
    }

    #[test]
    fn host_only_programs_dropped_guest_programs_kept() {
        let clean = sanitize(&entries(&[
            ("core.pager", "delta --dark"),
            ("core.editor", "vim"),
            ("core.sshcommand", "ssh -i ~/.ssh/id_work"),
            ("diff.lfs.textconv", "cat"),
            ("filter.lfs.smudge", "git-lfs smudge -- %f"),
            ("core.hookspath", "/home/alice/.githooks"),
        ]));
        assert_eq!(
            keys(&clean),
            [
                "core.editor",
                "diff.lfs.textconv",
                "commit.gpgsign",
                "tag.gpgsign"
            ]
        );
    }

    #[test]
    fn render_groups_sections_and_quotes_values() {
        let text = render(&entries(&[
            ("user.name", "Alice \"Al\" O'Neil"),
            ("user.email", "a@example.org"),
            ("url.git@example.org:.insteadof", "https://example.org/"),
            ("alias.x", "!echo a\\b"),
        ]));
        assert_eq!(
            text,
            "[user]\n\tname = \"Alice \\\"Al\\\" O'Neil\"\n\temail = \"a@example.org\"\n\
             [url \"git@example.org:\"]\n\tinsteadof = \"https://example.org/\"\n\
             [alias]\n\tx = \"!echo a\\\\b\"\n"
        );
    }
}
