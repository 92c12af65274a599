//! Dockerfile / Containerfile rules (DF0xx).

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::finding::Finding;
use crate::rules::{self, Rule};

/// One instruction with its continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub line: usize,
    /// Upper-cased keyword: `FROM`, `RUN`…
    pub keyword: String,
    pub args: String,
}

/// Splits a Dockerfile into instructions: comments dropped, `\` continuations and heredocs
/// (`RUN <<EOF … EOF`) joined into the instruction that starts them.
pub fn parse(text: &str) -> Vec<Instruction> {
    let mut instructions = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, raw)) = lines.next() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut body = String::from(trimmed);
        while body.ends_with('\\') {
            body.pop();
            match lines.next() {
                Some((_, next)) if next.trim_start().starts_with('#') => body.push('\\'),
                Some((_, next)) => body.push_str(&format!(" {}", next.trim())),
                None => break,
            }
        }
        if let Some(terminator) = heredoc_terminator(&body) {
            for (_, next) in lines.by_ref() {
                if next.trim() == terminator {
                    break;
                }
                body.push('\n');
                body.push_str(next);
            }
        }
        let (keyword, args) = body.split_once(char::is_whitespace).unwrap_or((body.as_str(), ""));
        instructions.push(Instruction {
            line: index + 1,
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        });
    }
    instructions
}

fn heredoc_terminator(body: &str) -> Option<String> {
    static HEREDOC: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#"<<-?["']?([A-Za-z_][A-Za-z0-9_]*)["']?"#).expect("static regex"));
    HEREDOC.captures(body).map(|c| c[1].to_string())
}

/// Whether a file's name says Dockerfile: `Dockerfile`, `Containerfile`, `Dockerfile.prod`, `api.dockerfile`.
pub fn is_dockerfile_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "dockerfile"
        || lower == "containerfile"
        || lower.starts_with("dockerfile.")
        || lower.starts_with("containerfile.")
        || lower.ends_with(".dockerfile")
        || lower.ends_with(".containerfile")
}

pub fn check(path: &str, text: &str) -> Vec<Finding> {
    let instructions = parse(text);
    let mut findings = Vec::new();
    let mut report = |rule: &Rule, line: usize, message: String| findings.push(Finding::of(rule, path, line, message));

    let stages = stages(&instructions);
    for stage in &stages {
        check_base_image(stage, &mut report);
    }
    if let Some(last) = stages.last() {
        check_final_user(last, &mut report);
        let has_healthcheck = last.instructions.iter().any(|i| i.keyword == "HEALTHCHECK");
        if !has_healthcheck {
            report(
                &rules::DOCKER_NO_HEALTHCHECK,
                last.from_line,
                "the final stage has no HEALTHCHECK".into(),
            );
        }
    }
    for instruction in &instructions {
        match instruction.keyword.as_str() {
            "ENV" => check_env(instruction, &mut report),
            "ARG" => check_arg(instruction, &mut report),
            "ADD" => check_add(instruction, &mut report),
            "RUN" => check_run(instruction, &mut report),
            "EXPOSE" => check_expose(instruction, &mut report),
            _ => {}
        }
    }
    findings
}

struct Stage<'a> {
    from_line: usize,
    image: String,
    instructions: Vec<&'a Instruction>,
    /// The base is an earlier stage or `scratch`: no registry image to pin.
    is_local: bool,
}

fn stages(instructions: &[Instruction]) -> Vec<Stage<'_>> {
    let mut global_args: HashMap<String, String> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut stages: Vec<Stage<'_>> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let image = substitute(words.first().copied().unwrap_or(""), &global_args);
            let is_local =
                image.eq_ignore_ascii_case("scratch") || names.iter().any(|n| n.eq_ignore_ascii_case(&image));
            if let (Some(as_word), Some(name)) = (words.get(1), words.get(2)) {
                if as_word.eq_ignore_ascii_case("as") {
                    names.push(name.to_string());
                }
            }
            stages.push(Stage {
                from_line: instruction.line,
                image,
                instructions: Vec::new(),
                is_local,
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(instruction);
        } else if instruction.keyword == "ARG" {
            if let Some((name, value)) = instruction.args.split_once('=') {
                global_args.insert(name.trim().to_string(), value.trim().trim_matches('"').to_string());
            }
        }
    }
    stages
}

/// `${NAME}` / `$NAME` from ARGs declared before the first FROM (their defaults).
fn substitute(word: &str, args: &HashMap<String, String>) -> String {
    static VAR: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?").expect("static regex"));
    VAR.replace_all(word, |c: &regex::Captures<'_>| {
        args.get(&c[1]).cloned().unwrap_or_else(|| c[0].to_string())
    })
    .into_owned()
}

fn check_base_image(stage: &Stage<'_>, report: &mut impl FnMut(&Rule, usize, String)) {
    if stage.is_local || stage.image.contains('$') || stage.image.is_empty() {
        return;
    }
    let reference = ImageReference::parse(&stage.image);
    if reference.digest.is_none() {
        match reference.tag.as_deref() {
            None => report(
                &rules::DOCKER_UNPINNED_TAG,
                stage.from_line,
                format!("`{}` has no tag (means latest)", stage.image),
            ),
            Some("latest") => report(
                &rules::DOCKER_UNPINNED_TAG,
                stage.from_line,
                format!("`{}` uses latest", stage.image),
            ),
            Some(_) => {}
        }
        report(
            &rules::DOCKER_NO_DIGEST,
            stage.from_line,
            format!("`{}` is not pinned by digest", stage.image),
        );
    }
}

fn check_final_user(stage: &Stage<'_>, report: &mut impl FnMut(&Rule, usize, String)) {
    match stage.instructions.iter().rev().find(|i| i.keyword == "USER") {
        Some(user) => {
            let name = user.args.split(':').next().unwrap_or("").trim();
            if name == "root" || name == "0" {
                report(
                    &rules::DOCKER_RUNS_AS_ROOT,
                    user.line,
                    format!("the final USER is `{}`", user.args),
                );
            }
        }
        // Images built to run unprivileged say so in their tag (distroless `:nonroot`).
        None if ImageReference::parse(&stage.image)
            .tag
            .is_some_and(|t| t.contains("nonroot")) => {}
        None => report(
            &rules::DOCKER_RUNS_AS_ROOT,
            stage.from_line,
            "the final stage never sets USER".into(),
        ),
    }
}

/// `registry:5000/team/app:1.2@sha256:…` split into its tag and digest.
#[derive(Debug, PartialEq, Eq)]
pub struct ImageReference {
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageReference {
    pub fn parse(image: &str) -> Self {
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_string())),
            None => (image, None),
        };
        // A colon after the last slash separates the tag; one before it is a registry port.
        let last_segment = rest.rfind('/').map_or(0, |i| i + 1);
        match rest[last_segment..].rfind(':') {
            Some(colon) => Self {
                name: rest[..last_segment + colon].to_string(),
                tag: Some(rest[last_segment + colon + 1..].to_string()),
                digest,
            },
            None => Self {
                name: rest.to_string(),
                tag: None,
                digest,
            },
        }
    }
}

/// Names that hold credentials (`DB_PASSWORD`, `apiKey`, `GITHUB_TOKEN`), but not names of where a
/// secret lives (`PASSWORD_FILE`) or of public material.
pub fn is_secret_name(name: &str) -> bool {
    static SECRET: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)(passw(or)?d|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential)")
            .expect("static regex")
    });
    static NOT_SECRET: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)(_(file|path|dir|url|uri|endpoint|name|length|ttl|expiry|header)$|public|_id$)")
            .expect("static regex")
    });
    SECRET.is_match(name) && !NOT_SECRET.is_match(name)
}

fn is_literal_value(value: &str) -> bool {
    let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
    !value.is_empty() && !value.starts_with('$')
}

fn check_env(instruction: &Instruction, report: &mut impl FnMut(&Rule, usize, String)) {
    for (name, value) in env_pairs(&instruction.args) {
        if is_secret_name(&name) && is_literal_value(&value) {
            report(
                &rules::DOCKER_SECRET_IN_ENV,
                instruction.line,
                format!("ENV {name} holds a literal value"),
            );
        }
    }
}

/// `ENV A=1 B="x y"` or the legacy `ENV A 1`.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    static PAIR: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#"([A-Za-z_][A-Za-z0-9_.-]*)=("[^"]*"|'[^']*'|\S*)"#).expect("static regex"));
    let first = args.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (name, value) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
        return vec![(name.to_string(), value.trim().to_string())];
    }
    PAIR.captures_iter(args)
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect()
}

fn check_arg(instruction: &Instruction, report: &mut impl FnMut(&Rule, usize, String)) {
    let (name, value) = match instruction.args.split_once('=') {
        Some((name, value)) => (name.trim(), Some(value)),
        None => (instruction.args.trim(), None),
    };
    if !is_secret_name(name) {
        return;
    }
    match value {
        Some(value) if is_literal_value(value) => report(
            &rules::DOCKER_SECRET_IN_ENV,
            instruction.line,
            format!("ARG {name} has a literal default"),
        ),
        _ => report(
            &rules::DOCKER_SECRET_BUILD_ARG,
            instruction.line,
            format!("ARG {name} carries a secret into the build history"),
        ),
    }
}

fn check_add(instruction: &Instruction, report: &mut impl FnMut(&Rule, usize, String)) {
    let words: Vec<&str> = instruction.args.split_whitespace().collect();
    if words.iter().any(|w| w.starts_with("--checksum=")) {
        return;
    }
    if let Some(url) = words
        .iter()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
    {
        report(
            &rules::DOCKER_ADD_REMOTE,
            instruction.line,
            format!("ADD downloads {url} without a checksum"),
        );
    }
}

fn check_run(instruction: &Instruction, report: &mut impl FnMut(&Rule, usize, String)) {
    static PIPE_TO_SHELL: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"\b(curl|wget)\b[^|;&]*\|\s*(sudo\s+)?(\S*/)?(ba|da|z|k)?sh\b|\b(ba|z)?sh\s+-c\s+.?\$\((curl|wget)\b",
        )
        .expect("static regex")
    });
    static SUDO: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(^|[;&|]\s*|\s)sudo\s").expect("static regex"));
    let script = &instruction.args;
    if PIPE_TO_SHELL.is_match(script) {
        report(
            &rules::DOCKER_PIPE_TO_SHELL,
            instruction.line,
            "a downloaded script is piped into a shell".into(),
        );
    }
    if SUDO.is_match(script) {
        report(&rules::DOCKER_SUDO, instruction.line, "RUN uses sudo".into());
    }
    let unpinned = unpinned_packages(script);
    if !unpinned.is_empty() {
        report(
            &rules::DOCKER_UNPINNED_PACKAGES,
            instruction.line,
            format!("unpinned: {}", unpinned.join(", ")),
        );
    }
}

/// Packages named to apt/apk/pip/npm without a version.
fn unpinned_packages(script: &str) -> Vec<String> {
    let mut unpinned = Vec::new();
    for command in script.split(['&', ';', '|', '\n']) {
        let words: Vec<&str> = command.split_whitespace().skip_while(|w| *w == "sudo").collect();
        let (packages, pinned): (&[&str], fn(&str) -> bool) = match words.as_slice() {
            ["apt-get" | "apt", rest @ ..] if rest.contains(&"install") => {
                (after(rest, "install"), |p| p.contains('='))
            }
            ["apk", "add", rest @ ..] => (rest, |p| p.contains('=') || p.contains('~')),
            ["pip" | "pip3", "install", rest @ ..] | ["python" | "python3", "-m", "pip", "install", rest @ ..] => {
                (rest, |p| {
                    p.contains("==") || p.contains('/') || p.starts_with('.') || p.ends_with(".whl")
                })
            }
            ["npm", "install" | "i", rest @ ..] if rest.contains(&"-g") || rest.contains(&"--global") => {
                (rest, |p| p.trim_start_matches('@').contains('@'))
            }
            _ => continue,
        };
        let mut skip_next = false;
        for package in packages {
            if skip_next {
                skip_next = false;
                continue;
            }
            // Flags that take a value (`-r requirements.txt`, `-t /opt`) name files, not packages.
            if matches!(
                *package,
                "-r" | "--requirement" | "-c" | "--constraint" | "-t" | "--target" | "-t=" | "--repository" | "-X"
            ) {
                skip_next = true;
                continue;
            }
            if package.starts_with('-') || package.starts_with('$') || pinned(package) {
                continue;
            }
            unpinned.push(package.to_string());
        }
    }
    unpinned
}

fn after<'a>(words: &'a [&'a str], marker: &str) -> &'a [&'a str] {
    words.iter().position(|w| *w == marker).map_or(&[], |i| &words[i + 1..])
}

fn check_expose(instruction: &Instruction, report: &mut impl FnMut(&Rule, usize, String)) {
    if instruction
        .args
        .split_whitespace()
        .any(|port| port.split('/').next() == Some("22"))
    {
        report(&rules::DOCKER_EXPOSES_SSH, instruction.line, "EXPOSE 22".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_and_heredocs_join_into_one_instruction() {
        let parsed = parse("FROM a\nRUN echo 1 \\\n  # comment\n  && echo 2\nRUN <<EOF\ncurl x | sh\nEOF\nUSER app\n");
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[1].line, 2);
        assert!(parsed[1].args.contains("echo 2"));
        assert!(parsed[2].args.contains("curl x | sh"));
        assert_eq!(parsed[3].keyword, "USER");
        assert_eq!(parsed[3].line, 8);
    }

    #[test]
    fn image_references_split_tag_digest_and_registry_port() {
        assert_eq!(ImageReference::parse("registry:5000/app").tag, None);
        assert_eq!(
            ImageReference::parse("registry:5000/app:1.2").tag.as_deref(),
            Some("1.2")
        );
        let pinned = ImageReference::parse("debian:12@sha256:abc");
        assert_eq!(
            (pinned.tag.as_deref(), pinned.digest.as_deref()),
            (Some("12"), Some("sha256:abc"))
        );
    }

    #[test]
    fn secret_names_exclude_where_secrets_live() {
        assert!(is_secret_name("DB_PASSWORD"));
        assert!(is_secret_name("apiKey"));
        assert!(!is_secret_name("PASSWORD_FILE"));
        assert!(!is_secret_name("TOKEN_URL"));
        assert!(!is_secret_name("PATH"));
    }

    #[test]
    fn unpinned_packages_ignore_requirement_files_and_flags() {
        assert_eq!(
            unpinned_packages("apt-get install -y --no-install-recommends curl=7.88 jq"),
            vec!["jq"]
        );
        assert!(unpinned_packages("pip install -r requirements.txt").is_empty());
        assert_eq!(unpinned_packages("pip install flask==3.0 requests"), vec!["requests"]);
        assert!(
            unpinned_packages("npm install express").is_empty(),
            "a local install is pinned by the lockfile"
        );
    }
}
