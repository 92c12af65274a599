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
        // The final stage inherits USER and HEALTHCHECK from the stages it is built FROM.
        let mut lineage = vec![last];
        while let Some(parent) = lineage.last().and_then(|s| s.parent).and_then(|i| stages.get(i)) {
            if lineage.len() > stages.len() {
                break;
            }
            lineage.push(parent);
        }
        check_final_user(&lineage, &mut report);
        let has_healthcheck = lineage
            .iter()
            .any(|stage| stage.instructions.iter().any(|i| i.keyword == "HEALTHCHECK"));
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
    /// The earlier stage this one is built FROM.
    parent: Option<usize>,
}

fn stages(instructions: &[Instruction]) -> Vec<Stage<'_>> {
    let mut global_args: HashMap<String, String> = HashMap::new();
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut stages: Vec<Stage<'_>> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let image = substitute(words.first().copied().unwrap_or(""), &global_args);
            let parent = names
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case(&image))
                .map(|(_, index)| *index);
            let is_local = image.eq_ignore_ascii_case("scratch") || parent.is_some();
            if let (Some(as_word), Some(name)) = (words.get(1), words.get(2)) {
                if as_word.eq_ignore_ascii_case("as") {
                    names.push((name.to_string(), stages.len()));
                }
            }
            stages.push(Stage {
                from_line: instruction.line,
                image,
                instructions: Vec::new(),
                is_local,
                parent,
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

/// `lineage`: the final stage first, then the stages it is built FROM.
fn check_final_user(lineage: &[&Stage<'_>], report: &mut impl FnMut(&Rule, usize, String)) {
    let (Some(stage), Some(base)) = (lineage.first(), lineage.last()) else {
        return;
    };
    let user = lineage
        .iter()
        .find_map(|stage| stage.instructions.iter().rev().find(|i| i.keyword == "USER"));
    match user {
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
        None if ImageReference::parse(&base.image)
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
        // Variables that turn verification off for every later step, and in the running image.
        let off = match name.as_str() {
            "GIT_SSL_NO_VERIFY" => matches!(value.as_str(), "1" | "true" | "True"),
            "NODE_TLS_REJECT_UNAUTHORIZED" | "PYTHONHTTPSVERIFY" => value == "0",
            "PIP_TRUSTED_HOST" | "CURL_INSECURE" => !value.is_empty(),
            _ => false,
        };
        if off {
            report(
                &rules::DOCKER_VERIFICATION_OFF,
                instruction.line,
                format!("ENV {name}={value} turns TLS verification off"),
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
    // `curl … | sh`, `| sudo -E bash -`, `| env X=1 sh`, `| python3 -`, `bash <(curl …)`,
    // `sh -c "$(curl …)"`.
    static PIPE_TO_SHELL: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"\b(curl|wget)\b[^|;&]*\|\s*(sudo(\s+-\S+)*\s+)?(env(\s+\w+=\S*)*\s+)?(\S*/)?((ba|da|z|k)?sh|python[0-9.]*|perl|ruby|node)\b|\b(ba|z)?sh\s+(-c\s+.?\$\(|<\(\s*)(curl|wget)\b",
        )
        .expect("static regex")
    });
    static VERIFICATION_OFF: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"(?x)
            \bcurl\b[^|;&]*\s(-k|--insecure|-[a-zA-Z]*k[a-zA-Z]*)\b
            | \bwget\b[^|;&]*\s--no-check-certificate\b
            | \bpip[0-9.]*\b[^|;&]*\s--trusted-host\b
            | --nogpgcheck\b | \bgpgcheck=0\b
            | \bapk\b[^|;&]*\s--allow-untrusted\b
            | \b(npm|yarn)\s+config\s+set\s+strict-ssl\s+false\b
            | \bgit\s+(-c\s+)?(?i:http\.sslverify)(\s*=\s*|\s+)false\b
            | \bGIT_SSL_NO_VERIFY=(1|true)\b | \bNODE_TLS_REJECT_UNAUTHORIZED=0\b
            | \bPIP_TRUSTED_HOST=",
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
    if VERIFICATION_OFF.is_match(script) {
        report(
            &rules::DOCKER_VERIFICATION_OFF,
            instruction.line,
            "a download or install runs with TLS or signature verification turned off".into(),
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

/// Packages named to a package manager without a version. Option values (`--virtual NAME`,
/// `--trusted-host HOST`), local files (`./x.deb`, `dist/*.tar.gz`) and redirections are not
/// packages.
fn unpinned_packages(script: &str) -> Vec<String> {
    let mut unpinned = Vec::new();
    for command in script.split(['&', ';', '|', '\n']) {
        let words: Vec<&str> = command
            .split_whitespace()
            .skip_while(|w| *w == "sudo" || w.starts_with('-') && command.trim_start().starts_with("sudo"))
            .collect();
        let Some(install) = Install::of(&words) else { continue };
        let mut skip_next = false;
        for word in install.arguments {
            if skip_next {
                skip_next = false;
                continue;
            }
            // `> log`, `2>/dev/null`, `< list`: a file, attached or the next word.
            if word.starts_with(['>', '<']) || word.starts_with("2>") || word.starts_with("&>") {
                skip_next = word.trim_start_matches(['1', '2', '&', '>', '<']).is_empty();
                continue;
            }
            if install.takes_value(word) {
                skip_next = true;
                continue;
            }
            if word.starts_with('-') || word.starts_with('$') || word.starts_with('"') && word.contains('$') {
                continue;
            }
            if install.is_local_file(word) || (install.pinned)(word) {
                continue;
            }
            unpinned.push(word.to_string());
        }
        // `gem install a b -v 1.2` pins every gem named.
        if install.manager == "gem" && install.arguments.iter().any(|w| matches!(*w, "-v" | "--version")) {
            unpinned.retain(|p| !install.arguments.contains(&p.as_str()));
        }
    }
    unpinned
}

/// One package-manager install command: which manager, its arguments after the subcommand, and
/// what a pinned package looks like to it.
struct Install<'a> {
    manager: &'static str,
    arguments: &'a [&'a str],
    pinned: fn(&str) -> bool,
}

impl<'a> Install<'a> {
    fn of(words: &'a [&'a str]) -> Option<Self> {
        let (manager, subcommands, pinned): (&'static str, &[&str], fn(&str) -> bool) = match words.first()? {
            &"apt-get" | &"apt" => ("apt", &["install"], |p| p.contains('=')),
            &"apk" => ("apk", &["add"], |p| p.contains('=') || p.contains('~')),
            &"pip" | &"pip3" => ("pip", &["install"], pip_pinned),
            &"python" | &"python3"
                if words.get(1) == Some(&"-m") && words.get(2).is_some_and(|w| w.starts_with("pip")) =>
            {
                ("pip", &["install"], pip_pinned)
            }
            &"pipx" => ("pipx", &["install"], pip_pinned),
            &"npm" => ("npm", &["install", "i", "add"], |p| {
                // `name@1.2.3` (exact), not `name@^1`, `name@latest`.
                p.trim_start_matches('@').split_once('@').is_some_and(|(_, v)| {
                    v.starts_with(|c: char| c.is_ascii_digit()) && !v.contains(['^', '~', '*', 'x', ' '])
                })
            }),
            &"yarn" => ("npm", &["add"], |p| {
                p.trim_start_matches('@')
                    .split_once('@')
                    .is_some_and(|(_, v)| v.starts_with(|c: char| c.is_ascii_digit()))
            }),
            &"yum" | &"dnf" | &"microdnf" | &"tdnf" => ("rpm", &["install"], |p| {
                // `httpd-2.4.57`: a dash followed by a digit starts the version.
                p.char_indices()
                    .any(|(i, c)| c == '-' && p[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
            }),
            &"zypper" => ("zypper", &["install", "in"], |p| {
                p.contains('=') || p.contains('>') || p.contains('<')
            }),
            &"gem" => ("gem", &["install"], |p| p.contains(':')),
            _ => return None,
        };
        let position = words.iter().position(|w| subcommands.contains(w))?;
        // `npm install` / `npm ci` with nothing named installs the lockfile: pinned.
        Some(Self {
            manager,
            arguments: &words[position + 1..],
            pinned,
        })
    }

    /// Options whose value is the next word.
    fn takes_value(&self, word: &str) -> bool {
        let common = [
            "-r",
            "--requirement",
            "-c",
            "--constraint",
            "-t",
            "--target",
            "--root",
            "--prefix",
        ];
        let by_manager: &[&str] = match self.manager {
            "apt" => &["-o", "--option", "-t", "--target-release", "-c", "--config-file"],
            "apk" => &[
                "-t",
                "--virtual",
                "-X",
                "--repository",
                "-p",
                "--root",
                "--keys-dir",
                "--arch",
                "--cache-dir",
            ],
            "pip" | "pipx" => &[
                "--trusted-host",
                "-i",
                "--index-url",
                "--extra-index-url",
                "-f",
                "--find-links",
                "--cache-dir",
                "--platform",
                "--python-version",
                "--implementation",
                "--abi",
                "--src",
                "-e",
                "--editable",
                "--python",
                "--suffix",
                "--pip-args",
            ],
            "npm" => &["--prefix", "--registry", "--cache", "--userconfig", "-w", "--workspace"],
            "rpm" => &[
                "-c",
                "--config",
                "--installroot",
                "--releasever",
                "--setopt",
                "--repo",
                "--enablerepo",
                "--disablerepo",
            ],
            "zypper" => &["-r", "--repo", "--from", "-t", "--type"],
            "gem" => &[
                "-v",
                "--version",
                "-i",
                "--install-dir",
                "-n",
                "--bindir",
                "--source",
                "--platform",
            ],
            _ => &[],
        };
        common.contains(&word) || by_manager.contains(&word)
    }

    /// A package file or directory, not a name the manager resolves: `./x.deb`, `/tmp/*.rpm`,
    /// `dist/app-1.0.tar.gz`, `.`.
    fn is_local_file(&self, word: &str) -> bool {
        let archive = [
            ".deb", ".rpm", ".apk", ".whl", ".tar.gz", ".tgz", ".zip", ".gem", ".tar.bz2",
        ];
        let remote = word.contains("://");
        (!remote
            && (word.starts_with('.')
                || word.starts_with('/')
                || word.starts_with('~')
                || word.contains('/') && self.manager != "npm" && self.manager != "yarn"))
            || archive.iter().any(|ext| word.ends_with(ext))
            || (self.manager == "npm" && (word.starts_with("file:") || word.starts_with('.') || word.starts_with('/')))
    }
}

/// `name==1.2`, a direct URL with a fixed ref (`git+https://…@v1.2`), or a file.
fn pip_pinned(package: &str) -> bool {
    if let Some(vcs) = package
        .split_once("+https://")
        .or_else(|| package.split_once("+ssh://"))
        .map(|(_, rest)| rest)
    {
        // git+https://host/org/repo@ref#egg=name: pinned only with an @ref after the path.
        let path = vcs.split(['#', '?']).next().unwrap_or(vcs);
        return path.rsplit('/').next().is_some_and(|last| last.contains('@'));
    }
    package.contains("==") || package.contains(" @ ")
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
        assert!(unpinned_packages("npm install").is_empty(), "the lockfile pins");
        assert!(unpinned_packages("npm ci").is_empty());
    }

    #[test]
    fn every_package_manager_and_what_is_not_a_package() {
        let cases: &[(&str, &[&str])] = &[
            // Option values, local files and redirections are not packages.
            (
                "pip install --trusted-host pypi.internal --index-url https://pypi.internal/simple flask==3.0",
                &[],
            ),
            ("apk add --no-cache --virtual .build-deps gcc=13.2.1-r0", &[]),
            ("apk --no-cache add curl", &["curl"]),
            ("apt-get install -y ./vendor/tool.deb /tmp/other.deb", &[]),
            ("pip install dist/app-1.0.tar.gz ./wheels/x.whl .", &[]),
            ("apt-get install -y jq > /var/log/apt.log 2>&1", &["jq"]),
            ("apt-get install -y jq 2>/dev/null", &["jq"]),
            // yum/dnf/microdnf/zypper/gem/npm/pipx/git+https.
            ("yum install -y httpd-2.4.57 mod_ssl", &["mod_ssl"]),
            ("dnf -y install --setopt tsflags=nodocs nginx", &["nginx"]),
            ("microdnf install -y shadow-utils-4.9", &[]),
            ("zypper --non-interactive install -y curl=8.0.1 git", &["git"]),
            ("gem install rails bundler:2.4.22", &["rails"]),
            ("gem install rails -v 7.1.2", &[]),
            ("npm install -g typescript@5.3.3 eslint", &["eslint"]),
            ("npm install express@^4", &["express@^4"]),
            ("npm install @angular/cli@17.0.0 left-pad@latest", &["left-pad@latest"]),
            ("pipx install poetry==1.7.1 black", &["black"]),
            (
                "pip install git+https://github.com/org/lib.git",
                &["git+https://github.com/org/lib.git"],
            ),
            ("pip install git+https://github.com/org/lib.git@v1.2.0#egg=lib", &[]),
            ("sudo -E apt-get install -y curl", &["curl"]),
        ];
        for (script, expected) in cases {
            assert_eq!(unpinned_packages(script), *expected, "{script}");
        }
    }
}
