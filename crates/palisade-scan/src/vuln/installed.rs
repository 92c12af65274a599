//! What language package managers leave installed in an image, beyond dpkg and apk: Python
//! distributions (`*.dist-info/METADATA`, `*.egg-info`), Node packages
//! (`node_modules/**/package.json`), PHP (`vendor/composer/installed.json`), Ruby gemspecs, Java
//! archives (`pom.properties` inside JAR/WAR/EAR, nested archives too) and Go binaries (the build
//! information every Go binary carries: its module versions and the Go version).

use std::io::{Cursor, Read};

/// (name, version) as its ecosystem's advisories name it.
pub type NameVersion = (String, String);

/// Which reader a path of an image's filesystem is for, by its path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    PythonMetadata,
    NodePackage,
    Composer,
    Gemspec,
    JavaArchive,
}

impl Installed {
    pub fn of(path: &str) -> Option<Self> {
        let file = path.rsplit('/').next().unwrap_or(path);
        let parent = path.rsplit('/').nth(1).unwrap_or("");
        if (file == "METADATA" && parent.ends_with(".dist-info"))
            || (file == "PKG-INFO" && parent.ends_with(".egg-info"))
            || (file.ends_with(".egg-info") && !parent.ends_with(".egg-info"))
        {
            return Some(Self::PythonMetadata);
        }
        if file == "package.json" && is_node_package_dir(path) {
            return Some(Self::NodePackage);
        }
        if file == "installed.json" && path.ends_with("vendor/composer/installed.json") {
            return Some(Self::Composer);
        }
        if file.ends_with(".gemspec") && parent == "specifications" {
            return Some(Self::Gemspec);
        }
        if [".jar", ".war", ".ear"].iter().any(|ext| file.ends_with(ext)) {
            return Some(Self::JavaArchive);
        }
        None
    }

    /// The OSV ecosystem the packages belong to.
    pub fn ecosystem(self) -> &'static str {
        match self {
            Self::PythonMetadata => "PyPI",
            Self::NodePackage => "npm",
            Self::Composer => "Packagist",
            Self::Gemspec => "RubyGems",
            Self::JavaArchive => "Maven",
        }
    }

    /// Packages from a text file (every kind but Java archives), with their declared license
    /// where the file says.
    pub fn packages(self, file_name: &str, text: &str) -> Vec<(String, String, Option<String>)> {
        let with = |found: Option<NameVersion>, license: Option<String>| {
            found
                .map(|(name, version)| (name, version, license))
                .into_iter()
                .collect()
        };
        match self {
            Self::PythonMetadata => with(python_metadata(text), python_license(text)),
            Self::NodePackage => with(node_package(text), node_license(text)),
            Self::Composer => composer_installed(text),
            Self::Gemspec => with(gemspec(file_name, text), gem_license(text)),
            Self::JavaArchive => Vec::new(),
        }
    }
}

/// `…/node_modules/NAME/package.json` or `…/node_modules/@SCOPE/NAME/package.json`: a package's
/// own manifest, not one of the files packages ship deeper inside themselves.
fn is_node_package_dir(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let n = parts.len();
    (n >= 3 && parts[n - 3] == "node_modules" && !parts[n - 2].starts_with('@'))
        || (n >= 4 && parts[n - 4] == "node_modules" && parts[n - 3].starts_with('@'))
}

/// Core metadata (`METADATA`, `PKG-INFO`): RFC 822 headers until the first blank line.
pub fn python_metadata(text: &str) -> Option<NameVersion> {
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("Name:") {
            name.get_or_insert_with(|| value.trim().to_string());
        } else if let Some(value) = line.strip_prefix("Version:") {
            version.get_or_insert_with(|| value.trim().to_string());
        }
    }
    Some((name.filter(|n| !n.is_empty())?, version.filter(|v| !v.is_empty())?))
}

/// `License-Expression` (metadata 2.4), else a short `License` (long ones are license texts).
fn python_license(text: &str) -> Option<String> {
    let header = |key: &str| {
        text.lines()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty() && v != "UNKNOWN")
    };
    header("License-Expression:").or_else(|| header("License:").filter(|l| l.len() <= 64))
}

/// `"license": "MIT"`, or the old `{"type": "MIT"}` and `[{"type": …}]` forms.
fn node_license(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let license = value.get("license").or_else(|| value.get("licenses"))?;
    let one = |v: &serde_json::Value| {
        v.as_str()
            .map(str::to_string)
            .or_else(|| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
    };
    match license.as_array() {
        Some(list) => {
            let all: Vec<String> = list.iter().filter_map(one).collect();
            (!all.is_empty()).then(|| all.join(" OR "))
        }
        None => one(license),
    }
}

/// `s.licenses = ["MIT".freeze]` or `s.license = "MIT"`.
fn gem_license(text: &str) -> Option<String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("s.licenses") || l.starts_with("s.license "))?;
    let names: Vec<&str> = line
        .split(['"', '\''])
        .skip(1)
        .step_by(2)
        .filter(|n| !n.is_empty())
        .collect();
    (!names.is_empty()).then(|| names.join(" OR "))
}

pub fn node_package(text: &str) -> Option<NameVersion> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let name = value.get("name")?.as_str()?;
    let version = value.get("version")?.as_str()?;
    (!name.is_empty() && !version.is_empty()).then(|| (name.to_string(), version.to_string()))
}

/// Composer 1 (an array) and 2 (`{"packages": [...]}`); versions without their `v`; licenses.
pub fn composer_installed(text: &str) -> Vec<(String, String, Option<String>)> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let packages = value.get("packages").unwrap_or(&value);
    packages
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|package| {
            let name = package.get("name")?.as_str()?;
            let version = package.get("version")?.as_str()?;
            let version = version.strip_prefix('v').unwrap_or(version);
            let licenses: Vec<&str> = package
                .get("license")
                .and_then(|l| l.as_array())
                .map(|l| l.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            let license = (!licenses.is_empty()).then(|| licenses.join(" OR "));
            Some((name.to_ascii_lowercase(), version.to_string(), license))
        })
        .collect()
}

/// An installed gem's specification: `s.name = "rack".freeze` and `s.version = "2.2.3"`, or the
/// file name `NAME-VERSION.gemspec` when the fields are not literal.
pub fn gemspec(file_name: &str, text: &str) -> Option<NameVersion> {
    let field = |key: &str| -> Option<String> {
        text.lines().find_map(|line| {
            let line = line.trim();
            let rest = line.strip_prefix("s.")?.strip_prefix(key)?.trim_start();
            let rest = rest.strip_prefix('=')?.trim_start();
            let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let value = &rest[1..];
            let end = value.find(quote)?;
            Some(value[..end].to_string())
        })
    };
    let version_of = |text: &str| text.split(['"', '\'']).nth(1).map(str::to_string);
    let from_file = file_name.strip_suffix(".gemspec").and_then(|stem| {
        let cut = stem
            .char_indices()
            .filter(|(i, c)| *c == '-' && stem[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
            .map(|(i, _)| i)
            .next_back()?;
        Some((stem[..cut].to_string(), stem[cut + 1..].to_string()))
    });
    let name = field("name").or_else(|| from_file.as_ref().map(|(n, _)| n.clone()))?;
    let version = field("version")
        .or_else(|| {
            // `s.version = Gem::Version.new("1.2")`
            text.lines()
                .map(str::trim)
                .find(|l| l.starts_with("s.version"))
                .and_then(version_of)
        })
        .or_else(|| from_file.map(|(_, v)| v))?;
    Some((name, version))
}

/// Archives nested deeper than this are not opened (a fat JAR in a WAR in an EAR is three).
const MAX_ARCHIVE_DEPTH: usize = 4;
/// A nested archive larger than this is not read into memory.
const MAX_NESTED_ARCHIVE: u64 = 256 * 1024 * 1024;

/// Maven coordinates (`groupId:artifactId`, version) of a Java archive and of the archives inside
/// it, from `META-INF/maven/**/pom.properties`; an archive without one is named by its manifest
/// when that gives a vendor id, title and version.
pub fn java_archive(bytes: &[u8]) -> Vec<NameVersion> {
    let mut found = Vec::new();
    java_archive_into(bytes, 0, &mut found);
    found.sort();
    found.dedup();
    found
}

fn java_archive_into(bytes: &[u8], depth: usize, found: &mut Vec<NameVersion>) {
    let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return;
    };
    let mut own = Vec::new();
    let mut manifest = None;
    let mut nested = Vec::new();
    for index in 0..archive.len() {
        let Ok(mut entry) = archive.by_index(index) else {
            continue;
        };
        let Ok(name) = entry.name().map(|n| n.to_string()) else {
            continue;
        };
        if name.starts_with("META-INF/maven/") && name.ends_with("/pom.properties") && entry.size() < 64 * 1024 {
            let mut text = String::new();
            if entry.read_to_string(&mut text).is_ok() {
                own.extend(pom_properties(&text));
            }
        } else if name == "META-INF/MANIFEST.MF" && entry.size() < 1024 * 1024 {
            let mut text = String::new();
            if entry.read_to_string(&mut text).is_ok() {
                manifest = Some(text);
            }
        } else if depth + 1 < MAX_ARCHIVE_DEPTH
            && [".jar", ".war", ".ear"].iter().any(|ext| name.ends_with(ext))
            && entry.size() <= MAX_NESTED_ARCHIVE
        {
            let mut inner = Vec::with_capacity(entry.size() as usize);
            if entry.read_to_end(&mut inner).is_ok() {
                nested.push(inner);
            }
        }
    }
    if own.is_empty() {
        own.extend(manifest.as_deref().and_then(manifest_coordinates));
    }
    found.extend(own);
    for inner in nested {
        java_archive_into(&inner, depth + 1, found);
    }
}

fn pom_properties(text: &str) -> Option<NameVersion> {
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    Some((
        format!("{}:{}", value("groupId")?, value("artifactId")?),
        value("version")?,
    ))
}

fn manifest_coordinates(text: &str) -> Option<NameVersion> {
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    Some((
        format!(
            "{}:{}",
            value("Implementation-Vendor-Id")?,
            value("Implementation-Title")?
        ),
        value("Implementation-Version")?,
    ))
}

/// The crates.io dependencies a Rust binary built with `cargo auditable` lists in its `.dep-v0`
/// section (runtime dependencies only: build-time ones are not in the binary). `None` for a
/// binary without one.
pub fn rust_auditable(binary: &[u8]) -> Option<Vec<NameVersion>> {
    // The embedded list is zlib-compressed JSON; 8 MiB decompressed is auditable-info's own default.
    let info = auditable_info::audit_info_from_slice(binary, 8 * 1024 * 1024).ok()?;
    Some(
        info.packages
            .into_iter()
            .filter(|p| matches!(p.source, auditable_serde::Source::CratesIo))
            .filter(|p| matches!(p.kind, auditable_serde::DependencyKind::Runtime))
            .map(|p| (p.name, p.version.to_string()))
            .collect(),
    )
}

/// What a Go binary says about how it was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoBuild {
    /// `1.21.3` (without `go`; OSV's `stdlib` package uses this form).
    pub go_version: String,
    /// The main module and its dependencies (replacements applied), `(devel)` main versions left out.
    pub modules: Vec<NameVersion>,
}

const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";
/// Go 1.18+ inlines the strings after a 32-byte header; older binaries point into the data
/// segment, which needs the executable's section table (not read: Go 1.17 is long out of support).
const BUILDINFO_HEADER: usize = 32;
/// The version string and module list together stay far below this.
const MAX_BUILDINFO: usize = 1024 * 1024;

/// Go's build information in an ELF executable (images are Linux): the first occurrence of its
/// header, with at most `MAX_BUILDINFO` bytes of strings after it.
pub fn go_buildinfo(binary: &[u8]) -> Option<GoBuild> {
    if !binary.starts_with(b"\x7fELF") {
        return None;
    }
    let at = binary
        .windows(BUILDINFO_MAGIC.len())
        .position(|w| w == BUILDINFO_MAGIC)?;
    let end = binary.len().min(at + BUILDINFO_HEADER + MAX_BUILDINFO);
    parse_buildinfo(&binary[at..end])
}

/// Go's varint (unsigned LEB128).
fn uvarint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((usize::try_from(value).ok()?, i + 1));
        }
    }
    None
}

fn parse_buildinfo(data: &[u8]) -> Option<GoBuild> {
    let flags = *data.get(15)?;
    if flags & 0x2 == 0 {
        return None; // pre-1.18 pointer format
    }
    let mut at = BUILDINFO_HEADER;
    let mut string = || -> Option<&[u8]> {
        let (length, used) = uvarint(data.get(at..)?)?;
        let start = at + used;
        let bytes = data.get(start..start.checked_add(length)?)?;
        at = start + length;
        Some(bytes)
    };
    let version = String::from_utf8_lossy(string()?).into_owned();
    let modinfo = string()?;
    let go_version = version.strip_prefix("go")?.to_string();
    // modinfo is framed by 16-byte sentinels (not UTF-8): cut them off as bytes.
    let modinfo = if modinfo.len() >= 32 {
        String::from_utf8_lossy(&modinfo[16..modinfo.len() - 16]).into_owned()
    } else {
        String::new()
    };
    let mut modules: Vec<NameVersion> = Vec::new();
    for line in modinfo.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["mod", path, version, ..] | ["dep", path, version, ..] if *version != "(devel)" => {
                modules.push((path.to_string(), version.to_string()));
            }
            // `=> replacement version sum` replaces the module on the line before.
            ["=>", path, version, ..] => {
                if let Some(last) = modules.last_mut() {
                    *last = (path.to_string(), version.to_string());
                }
            }
            _ => {}
        }
    }
    Some(GoBuild { go_version, modules })
}

/// Writes Go's build-information blob as a Go 1.18+ linker does: for tests and fuzzing.
#[doc(hidden)]
pub fn encode_buildinfo(go_version: &str, modinfo_lines: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(BUILDINFO_MAGIC);
    out.push(8); // pointer size
    out.push(0x2); // inline strings, little endian
    out.resize(BUILDINFO_HEADER, 0);
    let mut put = |text: &[u8]| {
        let mut length = text.len();
        loop {
            let byte = (length & 0x7f) as u8;
            length >>= 7;
            if length == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(text);
    };
    put(go_version.as_bytes());
    let sentinel_start = b"0\x77\xaf\x0c\x92\x74\x08\x02\x41\xe1\xc1\x07\xe6\xd6\x18\xe6";
    let sentinel_end = b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2";
    let mut modinfo = sentinel_start.to_vec();
    modinfo.extend_from_slice(modinfo_lines.as_bytes());
    modinfo.extend_from_slice(sentinel_end);
    put(&modinfo);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn paths_are_recognised_by_kind() {
        let cases = [
            (
                "usr/lib/python3/dist-packages/requests-2.25.1.dist-info/METADATA",
                Some(Installed::PythonMetadata),
            ),
            (
                "usr/lib/python3.11/site-packages/six-1.16.0-py3.11.egg-info/PKG-INFO",
                Some(Installed::PythonMetadata),
            ),
            (
                "usr/lib/python3/dist-packages/distro-1.8.0.egg-info",
                Some(Installed::PythonMetadata),
            ),
            ("app/node_modules/lodash/package.json", Some(Installed::NodePackage)),
            (
                "app/node_modules/@babel/core/package.json",
                Some(Installed::NodePackage),
            ),
            (
                "app/node_modules/a/node_modules/b/package.json",
                Some(Installed::NodePackage),
            ),
            ("app/node_modules/lodash/fp/package.json", None),
            ("app/package.json", None),
            ("srv/vendor/composer/installed.json", Some(Installed::Composer)),
            (
                "usr/local/bundle/specifications/rack-2.2.3.gemspec",
                Some(Installed::Gemspec),
            ),
            ("src/app/app.gemspec", None),
            ("opt/app/app.jar", Some(Installed::JavaArchive)),
            ("usr/local/tomcat/webapps/shop.war", Some(Installed::JavaArchive)),
        ];
        for (path, kind) in cases {
            assert_eq!(Installed::of(path), kind, "{path}");
        }
    }

    #[test]
    fn text_formats() {
        assert_eq!(
            python_metadata("Metadata-Version: 2.1\nName: Jinja2\nVersion: 2.11.2\n\nName: not-this\n"),
            Some(("Jinja2".into(), "2.11.2".into()))
        );
        assert_eq!(python_metadata("Name: x\n"), None);
        assert_eq!(
            node_package(r#"{"name": "lodash", "version": "4.17.20"}"#),
            Some(("lodash".into(), "4.17.20".into()))
        );
        assert_eq!(node_package(r#"{"name": "lodash"}"#), None);
        assert_eq!(
            composer_installed(
                r#"{"packages": [{"name": "Guzzlehttp/Guzzle", "version": "v7.4.0", "license": ["MIT"]}]}"#
            ),
            [(
                "guzzlehttp/guzzle".to_string(),
                "7.4.0".to_string(),
                Some("MIT".to_string())
            )]
        );
        assert_eq!(
            composer_installed(r#"[{"name": "monolog/monolog", "version": "2.3.5"}]"#),
            [("monolog/monolog".to_string(), "2.3.5".to_string(), None)]
        );
        assert_eq!(
            Installed::PythonMetadata.packages("METADATA", "Name: a\nVersion: 1\nLicense-Expression: BSD-3-Clause\n"),
            [("a".to_string(), "1".to_string(), Some("BSD-3-Clause".to_string()))]
        );
        assert_eq!(
            Installed::NodePackage.packages(
                "package.json",
                r#"{"name": "a", "version": "1.0.0", "licenses": [{"type": "MIT"}, {"type": "Apache-2.0"}]}"#
            ),
            [(
                "a".to_string(),
                "1.0.0".to_string(),
                Some("MIT OR Apache-2.0".to_string())
            )]
        );
        assert_eq!(
            Installed::Gemspec.packages(
                "a-1.gemspec",
                "  s.name = \"a\"\n  s.version = \"1\"\n  s.licenses = [\"MIT\".freeze]\n"
            ),
            [("a".to_string(), "1".to_string(), Some("MIT".to_string()))]
        );
        assert_eq!(
            gemspec(
                "rack-2.2.3.gemspec",
                "Gem::Specification.new do |s|\n  s.name = \"rack\".freeze\n  s.version = \"2.2.3\"\nend\n"
            ),
            Some(("rack".into(), "2.2.3".into()))
        );
        assert_eq!(
            gemspec("net-http-persistent-4.0.1.gemspec", "s.version = VERSION\n"),
            Some(("net-http-persistent".into(), "4.0.1".into()))
        );
    }

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes) in files {
            writer
                .start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn java_archives_nested_three_deep() {
        let log4j = zip_of(&[(
            "META-INF/maven/org.apache.logging.log4j/log4j-core/pom.properties",
            b"#Generated\nversion=2.14.1\ngroupId=org.apache.logging.log4j\nartifactId=log4j-core\n",
        )]);
        let by_manifest = zip_of(&[(
            "META-INF/MANIFEST.MF",
            b"Manifest-Version: 1.0\nImplementation-Vendor-Id: com.example\nImplementation-Title: util\nImplementation-Version: 1.2\n",
        )]);
        let anonymous = zip_of(&[("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n")]);
        let war = zip_of(&[
            ("WEB-INF/lib/log4j-core-2.14.1.jar", &log4j),
            ("WEB-INF/lib/util.jar", &by_manifest),
            ("WEB-INF/lib/anonymous.jar", &anonymous),
            (
                "META-INF/maven/com.example/shop/pom.properties",
                b"groupId=com.example\nartifactId=shop\nversion=3.0.0\n",
            ),
        ]);
        let ear = zip_of(&[("shop.war", &war)]);
        assert_eq!(
            java_archive(&ear),
            [
                ("com.example:shop".to_string(), "3.0.0".to_string()),
                ("com.example:util".to_string(), "1.2".to_string()),
                ("org.apache.logging.log4j:log4j-core".to_string(), "2.14.1".to_string()),
            ]
        );
        assert!(java_archive(b"not a zip").is_empty());
    }

    #[test]
    fn go_build_information_inside_a_binary() {
        let modinfo = "path\texample.com/app\nmod\texample.com/app\t(devel)\t\ndep\tgolang.org/x/net\tv0.7.0\th1:abc=\ndep\tgithub.com/old/lib\tv1.0.0\th1:def=\n=>\tgithub.com/new/lib\tv1.2.0\th1:ghi=\nbuild\t-compiler=gc\n";
        let blob = encode_buildinfo("go1.20.1", modinfo);
        // In the middle of a binary.
        let mut binary = b"\x7fELF".to_vec();
        binary.resize(64 * 1024 - 5, 0xAA);
        binary.extend_from_slice(&blob);
        binary.resize(binary.len() + 100_000, 0xBB);
        let build = go_buildinfo(&binary).expect("found");
        assert_eq!(build.go_version, "1.20.1");
        assert_eq!(
            build.modules,
            [
                ("golang.org/x/net".to_string(), "v0.7.0".to_string()),
                ("github.com/new/lib".to_string(), "v1.2.0".to_string()),
            ]
        );
        assert_eq!(go_buildinfo(&[0u8; 200_000]), None);
        // A truncated blob is no build information, not a panic.
        let mut truncated = b"\x7fELF".to_vec();
        truncated.extend_from_slice(&blob[..40]);
        assert_eq!(go_buildinfo(&truncated), None);
        let mut not_elf = blob.clone();
        not_elf.insert(0, b'#');
        assert_eq!(go_buildinfo(&not_elf), None, "ELF only");
    }
}
