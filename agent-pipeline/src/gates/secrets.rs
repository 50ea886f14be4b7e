//! A secret scan of generated files: keys, tokens and private keys that a model wrote into
//! code instead of reading them from the environment.
//!
//! The rules ([`RULES`] names them):
//!
//! | rule              | matches                                                             |
//! |-------------------|---------------------------------------------------------------------|
//! | `aws-access-key`  | `AKIA…` / `ASIA…` followed by 16 upper-case letters or digits       |
//! | `github-token`    | `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` + 36 letters or digits; `github_pat_…` |
//! | `openai-api-key`  | `sk-…` / `sk-proj-…` followed by 20 or more of `[A-Za-z0-9_-]`      |
//! | `slack-token`     | `xoxa-`, `xoxb-`, `xoxp-`, `xoxr-`, `xoxs-` tokens                  |
//! | `google-api-key`  | `AIza` + 35 characters                                              |
//! | `stripe-live-key` | `sk_live_…` / `rk_live_…`                                           |
//! | `private-key`     | `-----BEGIN … PRIVATE KEY-----` (RSA, EC, OPENSSH, DSA, PGP, ENCRYPTED, PKCS #8) |
//! | `generic-secret`  | `api_key`, `secret`, `token`, `password`, `passwd` (also as part of a longer name) assigned a quoted literal of 16 or more varied characters |
//!
//! Obvious placeholders (`your-api-key-here`, `xxxx…`, `<token>`, `${TOKEN}`, the AWS
//! documentation's `…EXAMPLE` key) are not findings, nor are values read from the
//! environment (`os.environ[…]`, `process.env.…`), which are not literals.
//!
//! A finding's excerpt shows the line with every secret on it cut to its first four
//! characters and `…`: findings end up in reports and logs, the secrets must not.

use std::sync::LazyLock;

use regex::Regex;

/// A secret found in a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecretFinding {
    /// The file, relative to the workspace.
    pub path: String,
    /// The line, from 1.
    pub line: usize,
    /// What kind of secret (`aws-access-key`, `private-key`, …).
    pub rule: String,
    /// The line with the secret masked, for people.
    pub excerpt: String,
}

/// The names of the rules, in the order they are tried.
pub const RULES: [&str; 8] = [
    "aws-access-key",
    "github-token",
    "openai-api-key",
    "slack-token",
    "google-api-key",
    "stripe-live-key",
    "private-key",
    "generic-secret",
];

/// The longest excerpt, in characters (before the `…` added where it is cut).
const EXCERPT_LIMIT: usize = 160;
/// How many characters of a secret an excerpt keeps.
const KEEP: usize = 4;
/// The least Shannon entropy, in bits per character, of a `generic-secret` value.
const MIN_ENTROPY: f64 = 3.5;
/// The shortest `generic-secret` value, in characters.
const MIN_GENERIC_LEN: usize = 16;

/// A rule with a fixed shape: the regex's group `secret` (else the whole match) is the
/// secret to mask.
struct Rule {
    name: &'static str,
    regex: Regex,
    /// Whether the value must hold a digit (keeps long kebab-case names out of `sk-…`).
    needs_digit: bool,
}

/// Compiles one of this module's fixed patterns.
fn regex(pattern: &str) -> Regex {
    match Regex::new(pattern) {
        Ok(regex) => regex,
        // The patterns are constants, checked by the unit tests.
        Err(e) => panic!("invalid built-in pattern {pattern:?}: {e}"),
    }
}

/// The rules with a fixed shape, compiled once.
static RULES_WITH_SHAPE: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |name, pattern, needs_digit| Rule {
        name,
        regex: regex(pattern),
        needs_digit,
    };
    vec![
        rule("aws-access-key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", false),
        rule(
            "github-token",
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,})\b",
            false,
        ),
        rule(
            "openai-api-key",
            r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",
            true,
        ),
        rule("slack-token", r"\bxox[abprs]-[A-Za-z0-9\-]{10,}", false),
        rule("google-api-key", r"\bAIza[0-9A-Za-z_\-]{35}", false),
        rule("stripe-live-key", r"\b[rs]k_live_[0-9A-Za-z]{10,}", false),
        // The header is not secret; key material on the same line (a PEM in one string
        // literal with `\n` escapes) is.
        rule(
            "private-key",
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?P<secret>.*)",
            false,
        ),
    ]
});

/// `name = "value"` where the name says it is a secret. The value is in group `d`, `s` or
/// `b` (double, single or back quotes).
static GENERIC: LazyLock<Regex> = LazyLock::new(|| {
    regex(concat!(
        r"(?P<name>(?i-u:[a-z0-9_\-]*(?:api[_\-]?key|secret|token|password|passwd)[a-z0-9_\-]*))",
        r#"["']?\]?[ \t]*(?i-u::[ \t]*&?[a-z_][a-z0-9_.\[\]<>]*[ \t]*)?(?::=|=>|=|:)[ \t]*(?i-u:[rbfu]{1,2})?"#,
        r#"(?:"(?P<d>[^"\r\n]{16,256})"|'(?P<s>[^'\r\n]{16,256})'|`(?P<b>[^`\r\n]{16,256})`)"#,
    ))
});

/// Name endings that say the value is about a secret rather than the secret itself.
const NOT_SECRET_NAMES: [&str; 16] = [
    "url", "uri", "endpoint", "path", "file", "name", "type", "field", "label", "header", "prompt",
    "pattern", "regex", "env", "var", "id",
];

/// Words in a value that mark a placeholder.
const PLACEHOLDER_WORDS: [&str; 14] = [
    "xxxx",
    "****",
    "....",
    "your",
    "example",
    "placeholder",
    "changeme",
    "change-me",
    "change_me",
    "replace",
    "insert",
    "redacted",
    "dummy",
    "sample",
];

/// Finds secrets in one file's text.
///
/// Findings come in line order; a secret matched by a specific rule is not reported again by
/// `generic-secret`.
///
/// ```
/// use agent_pipeline::gates::secrets::scan_text;
///
/// let key = ["AKIA", "Z7QK4M2XW9PL3RTB"].concat();
/// let findings = scan_text("app.py", &format!("import boto3\nKEY = \"{key}\"\n"));
/// assert_eq!(findings.len(), 1);
/// assert_eq!((findings[0].line, findings[0].rule.as_str()), (2, "aws-access-key"));
/// assert_eq!(findings[0].excerpt, "KEY = \"AKIA…\"");
///
/// assert!(scan_text("app.py", "api_key = os.environ[\"OPENAI_API_KEY\"]\n").is_empty());
/// ```
pub fn scan_text(path: &str, text: &str) -> Vec<SecretFinding> {
    let mut findings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let hits = scan_line(line);
        if hits.is_empty() {
            continue;
        }
        let excerpt = excerpt(line, &hits);
        findings.extend(hits.into_iter().map(|hit| SecretFinding {
            path: path.to_owned(),
            line: index + 1,
            rule: hit.rule.to_owned(),
            excerpt: excerpt.clone(),
        }));
    }
    findings
}

/// Finds secrets in files given as (path, content) pairs, skipping binary files (content
/// that is not UTF-8 or holds a NUL byte).
///
/// ```
/// use agent_pipeline::gates::secrets::scan_files;
///
/// let token = ["ghp_", "9aZ2kLm4Qw8Er6Ty1Ui3Op5As7Df0Gh2Jk4L"].concat();
/// let files = vec![
///     ("README.md".to_owned(), b"# Hello".to_vec()),
///     ("deploy.sh".to_owned(), format!("TOKEN={token}\n").into_bytes()),
///     ("logo.png".to_owned(), vec![0x89, b'P', b'N', b'G', 0, 0xff]),
/// ];
/// let findings = scan_files(&files);
/// assert_eq!(findings.len(), 1);
/// assert_eq!((findings[0].path.as_str(), findings[0].rule.as_str()), ("deploy.sh", "github-token"));
/// ```
pub fn scan_files(files: &[(String, Vec<u8>)]) -> Vec<SecretFinding> {
    files
        .iter()
        .filter(|(_, content)| !content.contains(&0))
        .filter_map(|(path, content)| Some((path, std::str::from_utf8(content).ok()?)))
        .flat_map(|(path, text)| scan_text(path, text))
        .collect()
}

/// One secret in a line: the rule and the byte range of the value to mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hit {
    rule: &'static str,
    start: usize,
    end: usize,
}

/// The secrets in one line, by position, overlapping ones reported once.
fn scan_line(line: &str) -> Vec<Hit> {
    let mut hits: Vec<Hit> = Vec::new();
    for rule in RULES_WITH_SHAPE.iter() {
        for captures in rule.regex.captures_iter(line) {
            let Some(whole) = captures.get(0) else {
                continue;
            };
            let secret = captures.name("secret").unwrap_or(whole);
            let value = whole.as_str();
            if is_placeholder(value)
                || (rule.needs_digit && !value.bytes().any(|b| b.is_ascii_digit()))
            {
                continue;
            }
            hits.push(Hit {
                rule: rule.name,
                start: secret.start(),
                end: secret.end(),
            });
        }
    }
    for captures in GENERIC.captures_iter(line) {
        let (Some(name), Some(value)) = (
            captures.name("name"),
            captures
                .name("d")
                .or_else(|| captures.name("s"))
                .or_else(|| captures.name("b")),
        ) else {
            continue;
        };
        if !is_secret_name(name.as_str()) || !looks_secret(value.as_str()) {
            continue;
        }
        let overlaps = hits
            .iter()
            .any(|hit| hit.start < value.end() && value.start() < hit.end);
        if !overlaps {
            hits.push(Hit {
                rule: "generic-secret",
                start: value.start(),
                end: value.end(),
            });
        }
    }
    hits.sort_by_key(|hit| (hit.start, hit.end));
    hits
}

/// Whether a variable or key name holds a secret (`client_secret`, `apiKey`), not something
/// about one (`token_url`, `passwordField`, `max_tokens`).
fn is_secret_name(name: &str) -> bool {
    let name = name.trim_matches(['_', '-']).to_ascii_lowercase();
    if name.ends_with("tokens") || name.ends_with("tokenizer") {
        return false;
    }
    !NOT_SECRET_NAMES.iter().any(|ending| {
        name.strip_suffix(ending).is_some_and(|rest| {
            rest.ends_with(['_', '-'])
                || ["key", "secret", "token", "password", "passwd"]
                    .iter()
                    .any(|word| rest.ends_with(word))
        })
    })
}

/// Whether a quoted value looks like a real secret rather than a word, a name or a
/// placeholder.
fn looks_secret(value: &str) -> bool {
    if value.chars().count() < MIN_GENERIC_LEN
        || value.chars().any(char::is_whitespace)
        || value.contains("://")
        || is_placeholder(value)
    {
        return false;
    }
    // An environment variable's name, `OPENAI_API_KEY_VALUE`.
    if value.contains('_')
        && value
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return false;
    }
    let classes = [
        value.bytes().any(|b| b.is_ascii_lowercase()),
        value.bytes().any(|b| b.is_ascii_uppercase()),
        value.bytes().any(|b| b.is_ascii_digit()),
        value.bytes().any(|b| !b.is_ascii_alphanumeric()),
    ];
    classes.iter().filter(|&&class| class).count() >= 2 && entropy(value) >= MIN_ENTROPY
}

/// Whether a value is an obvious stand-in: a template, a reference to the environment, or a
/// run of one character.
fn is_placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    let trimmed = lower.trim();
    PLACEHOLDER_WORDS.iter().any(|word| lower.contains(word))
        || (trimmed.starts_with('<') && trimmed.ends_with('>'))
        || lower.contains("${")
        || lower.contains("{{")
        || lower.contains("%(")
        || lower.contains("os.environ")
        || lower.contains("getenv")
        || lower.contains("process.env")
        || lower.contains("env(")
        || (trimmed.len() >= 8 && {
            let mut bytes = trimmed.bytes();
            let first = bytes.next();
            bytes.all(|b| Some(b) == first)
        })
}

/// The Shannon entropy of `value`'s characters, in bits per character.
fn entropy(value: &str) -> f64 {
    let mut counts: Vec<(char, u32)> = Vec::new();
    let mut total = 0u32;
    for c in value.chars() {
        total += 1;
        match counts.iter_mut().find(|(seen, _)| *seen == c) {
            Some((_, n)) => *n += 1,
            None => counts.push((c, 1)),
        }
    }
    if total == 0 {
        return 0.0;
    }
    let total = f64::from(total);
    counts
        .iter()
        .map(|&(_, n)| {
            let p = f64::from(n) / total;
            -p * p.log2()
        })
        .sum()
}

/// The line with each hit cut to its first [`KEEP`] characters and `…`, trimmed, and cut to
/// about [`EXCERPT_LIMIT`] characters around the first hit.
fn excerpt(line: &str, hits: &[Hit]) -> String {
    let mut masked = String::with_capacity(line.len());
    let mut cursor = 0;
    let mut first_mask = None;
    for hit in hits {
        if hit.start < cursor {
            // Overlaps a range already masked; mask what is left of it.
            if hit.end > cursor {
                cursor = hit.end;
            }
            continue;
        }
        masked.push_str(&line[cursor..hit.start]);
        first_mask.get_or_insert(masked.chars().count());
        let secret = &line[hit.start..hit.end];
        if secret.chars().count() > KEEP {
            masked.extend(secret.chars().take(KEEP));
            masked.push('…');
        } else {
            masked.push_str(secret);
        }
        cursor = hit.end;
    }
    masked.push_str(&line[cursor..]);

    let leading = masked.chars().take_while(|c| c.is_whitespace()).count();
    let text = masked.trim();
    let length = text.chars().count();
    if length <= EXCERPT_LIMIT {
        return text.to_owned();
    }
    let focus = first_mask.unwrap_or(0).saturating_sub(leading);
    let start = focus
        .saturating_sub(EXCERPT_LIMIT / 4)
        .min(length - EXCERPT_LIMIT);
    let mut cut: String = text.chars().skip(start).take(EXCERPT_LIMIT).collect();
    if start > 0 {
        cut.insert(0, '…');
    }
    if start + EXCERPT_LIMIT < length {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fake secrets are built by concatenation so that this file does not itself look like it
    // holds secrets to scanners.
    fn aws() -> String {
        ["AKIA", "Z7QK4M2XW9PL3RTB"].concat()
    }
    fn aws_session() -> String {
        ["ASIA", "Q3WX8N5KD2ML7PZR"].concat()
    }
    fn github(prefix: &str) -> String {
        [prefix, "_", "9aZ2kLm4Qw8Er6Ty1Ui3Op5As7Df0Gh2Jk4L"].concat()
    }
    fn github_pat() -> String {
        [
            "github_",
            "pat_",
            "11ABCDEFG0aZ2kLm4Qw8Er_",
            "6Ty1Ui3Op5As7Df0Gh2Jk4LzXcVbNm9Qw8Er6Ty1Ui3Op5As7Df0Gh2Jk4LzXcVbNm9",
        ]
        .concat()
    }
    fn openai() -> String {
        ["sk", "-", "Hq8wZ3kLm2Np5Rt7Vx9Yb1Cd4Ef6Gh0J"].concat()
    }
    fn openai_project() -> String {
        ["sk", "-proj-", "Hq8wZ3kLm2Np5Rt7Vx9Yb1Cd4Ef6Gh0J_a-b9Xk"].concat()
    }
    fn slack() -> String {
        [
            "xo",
            "xb-",
            "1234567890-0987654321-aB3dE5gH7jK9mN1pQ3sT5vW7",
        ]
        .concat()
    }
    fn google() -> String {
        ["AI", "za", "SyD4x9Qw2Er7Ty1Ui3Op5As8Df0Gh2Jk4L6z"].concat()
    }
    fn stripe() -> String {
        ["sk", "_live_", "51H8xQ2eZvKYlo2C9aB3dE5gH7jK9mN1p"].concat()
    }
    fn stripe_restricted() -> String {
        ["rk", "_live_", "51H8xQ2eZvKYlo2C9aB3dE5gH7jK9mN1p"].concat()
    }
    fn generic_value() -> String {
        ["q8W#z3", "Lm2$Np5Rt", "7Vx9Yb1"].concat()
    }

    fn rules(findings: &[SecretFinding]) -> Vec<&str> {
        findings.iter().map(|f| f.rule.as_str()).collect()
    }

    fn assert_single(text: &str, rule: &str, secret: &str) -> SecretFinding {
        let findings = scan_text("src/app.py", text);
        assert_eq!(rules(&findings), [rule], "{text}");
        let finding = findings[0].clone();
        assert!(
            !finding.excerpt.contains(secret),
            "the excerpt {:?} shows the secret",
            finding.excerpt
        );
        assert!(
            finding.excerpt.contains(&format!("{}…", &secret[..KEEP])),
            "{:?}",
            finding.excerpt
        );
        finding
    }

    #[test]
    fn all_patterns_compile() {
        assert_eq!(RULES_WITH_SHAPE.len() + 1, RULES.len());
        for (rule, name) in RULES_WITH_SHAPE.iter().zip(RULES) {
            assert_eq!(rule.name, name);
        }
        LazyLock::force(&GENERIC);
    }

    #[test]
    fn each_rule_finds_its_secret() {
        let cases = [
            ("aws-access-key", aws()),
            ("aws-access-key", aws_session()),
            ("github-token", github("ghp")),
            ("github-token", github("gho")),
            ("github-token", github("ghu")),
            ("github-token", github("ghs")),
            ("github-token", github("ghr")),
            ("github-token", github_pat()),
            ("openai-api-key", openai()),
            ("openai-api-key", openai_project()),
            ("slack-token", slack()),
            ("google-api-key", google()),
            ("stripe-live-key", stripe()),
            ("stripe-live-key", stripe_restricted()),
        ];
        for (rule, secret) in cases {
            // Assigned to a neutral name, so that only the specific rule can fire.
            assert_single(&format!("    value = \"{secret}\"\n"), rule, &secret);
            // Assigned to a secret-sounding name: still reported once, by the specific rule.
            assert_single(&format!("API_KEY = '{secret}'"), rule, &secret);
            // Unquoted, in a shell script or an .env file.
            assert_single(&format!("export X={secret}"), rule, &secret);
        }
    }

    #[test]
    fn private_key_blocks() {
        for kind in ["RSA ", "EC ", "OPENSSH ", "DSA ", "ENCRYPTED ", ""] {
            let text = format!(
                "-----BEGIN {kind}PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4Nw\n-----END {kind}PRIVATE KEY-----\n"
            );
            let findings = scan_text("key.pem", &text);
            assert_eq!(rules(&findings), ["private-key"], "{kind}");
            assert_eq!(findings[0].line, 1);
            assert!(!findings[0].excerpt.contains("MIIE"));
        }
        let pgp = "x\n-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF\n";
        let findings = scan_text("key.asc", pgp);
        assert_eq!(rules(&findings), ["private-key"]);
        assert_eq!(findings[0].line, 2);
        // A PEM in one string literal: the key material after the header is masked.
        let material = "MIIEowIBAAKCAQEAx4NwQ8kLm2Np5Rt7Vx9Yb1Cd4Ef6Gh0J";
        let inline = format!("KEY = \"-----BEGIN RSA PRIVATE KEY-----\\n{material}\\n\"");
        let findings = scan_text("app.py", &inline);
        assert_eq!(rules(&findings), ["private-key"]);
        assert!(
            !findings[0].excerpt.contains(material),
            "{}",
            findings[0].excerpt
        );
        // Public keys and certificates are not secrets.
        assert!(scan_text("k.pub", "-----BEGIN PUBLIC KEY-----\nMIIB\n").is_empty());
        assert!(scan_text("c.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n").is_empty());
    }

    #[test]
    fn generic_assignments() {
        let value = generic_value();
        for text in [
            format!("api_key = \"{value}\""),
            format!("API-KEY: '{value}'"),
            format!("const apiKey = `{value}`;"),
            format!("    \"client_secret\": \"{value}\","),
            format!("DB_PASSWORD = \"{value}\""),
            format!("passwd := \"{value}\""),
            format!("access_token => '{value}'"),
            format!("password: str = \"{value}\""),
            format!("let token: &str = \"{value}\";"),
            format!("secret_key=r'{value}'"),
        ] {
            let finding = assert_single(&text, "generic-secret", &value);
            assert_eq!(finding.line, 1);
        }
        // Random hexadecimal.
        let hex = ["3f9a8b7c", "6d5e4f3a", "2b1c0d9e"].concat();
        assert_single(&format!("SECRET = \"{hex}\""), "generic-secret", &hex);
    }

    #[test]
    fn placeholders_and_ordinary_code_are_not_secrets() {
        let text = r#"import os

api_key = os.environ["OPENAI_API_KEY"]
token = os.getenv("GITHUB_TOKEN")
const apiKey = process.env.OPENAI_API_KEY;
print('Hello Earthling')
API_KEY = "your-api-key-here"
api_key = "sk-your-key-goes-here-please"
token = "xxxxxxxxxxxxxxxxxxxxxxxx"
password = "<your password here>"
secret = "${SECRET_FROM_VAULT}"
token = "{{ github_token_value }}"
password = "password1234"
api_key_env = "OPENAI_API_KEY_VAR"
api_key = "OPENAI_API_KEY_NAME"
token_url = "https://oauth2.googleapis.com/token?x=Zq81"
password_field = "input#password-Zq81k"
tokenizer = "bert-base-uncased-v2"
max_tokens = 1024
if password == "correct-Horse-42-battery":
secret_message = "the quick brown fox jumps"
short_token = "aB3$dE5g"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
css_class = "sk-button-primary-large-rounded"
task-abcdefghijklmnopqrstuvwxyz0123
"#;
        let findings = scan_text("app.py", text);
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn line_numbers_and_several_secrets() {
        let (aws, token) = (aws(), github("ghp"));
        let text = format!(
            "one\n\ntwo\nkeys = [\"{aws}\", \"{token}\"]\nthree\r\nX = \"{}\"\n",
            openai()
        );
        let findings = scan_text("conf.py", &text);
        let found: Vec<(usize, &str)> =
            findings.iter().map(|f| (f.line, f.rule.as_str())).collect();
        assert_eq!(
            found,
            [
                (4, "aws-access-key"),
                (4, "github-token"),
                (6, "openai-api-key")
            ]
        );
        // Both secrets of line 4 are masked in both findings.
        for finding in &findings[..2] {
            assert_eq!(finding.excerpt, "keys = [\"AKIA…\", \"ghp_…\"]");
            assert_eq!(finding.path, "conf.py");
        }
    }

    #[test]
    fn long_lines_are_cut_around_the_secret() {
        let secret = aws();
        let line = format!(
            "{}x = '{secret}'; {}",
            "a = 1; ".repeat(100),
            "b = 2; ".repeat(100)
        );
        let findings = scan_text("min.js", &line);
        assert_eq!(rules(&findings), ["aws-access-key"]);
        let excerpt = &findings[0].excerpt;
        assert!(excerpt.contains("AKIA…"), "{excerpt}");
        assert!(!excerpt.contains(&secret));
        assert!(excerpt.chars().count() <= EXCERPT_LIMIT + 2, "{excerpt}");
        assert!(excerpt.starts_with('…') && excerpt.ends_with('…'));
    }

    #[test]
    fn binary_files_are_skipped() {
        let secret = aws();
        let mut with_nul = format!("K={secret}\n").into_bytes();
        with_nul.push(0);
        let mut not_utf8 = format!("K={secret}\n").into_bytes();
        not_utf8.push(0xff);
        let files = vec![
            ("a.bin".to_owned(), with_nul),
            ("b.bin".to_owned(), not_utf8),
            ("c.txt".to_owned(), format!("K={secret}\n").into_bytes()),
        ];
        let findings = scan_files(&files);
        assert_eq!(findings.len(), 1);
        assert_eq!((findings[0].path.as_str(), findings[0].line), ("c.txt", 1));
    }

    #[test]
    fn entropy_of_simple_strings() {
        assert!(entropy("aaaaaaaa").abs() < f64::EPSILON);
        assert!((entropy("abababab") - 1.0).abs() < 1e-9);
        assert!((entropy("abcdefghijklmnop") - 4.0).abs() < 1e-9);
        assert!(entropy("") == 0.0);
    }
}
