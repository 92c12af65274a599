//! SBOMs both ways: every package a scan found as CycloneDX 1.6 JSON or SPDX 2.3 JSON, each with
//! its purl, declared license where known, and the file and image layer it came from; and an SBOM
//! (CycloneDX or SPDX JSON, from any tool) read back as packages to match against advisories.
//!
//! The `cyclonedx-bom` crate writes CycloneDX up to 1.5 only; 1.6 is written here with serde, and
//! the tests validate both formats against the official JSON schemas.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::secrets::LineIndex;
use crate::vuln::Package;
use crate::Report;

/// The purl of a package (<https://github.com/package-url/purl-spec>).
pub fn purl(package: &Package) -> Option<String> {
    let (family, release) = package
        .ecosystem
        .split_once(':')
        .unwrap_or((package.ecosystem.as_str(), ""));
    let version = encode(&package.version);
    let name = package.binary.as_deref().unwrap_or(&package.name);
    let upstream = package
        .binary
        .as_ref()
        .map(|_| format!("&upstream={}", encode(&package.name)))
        .unwrap_or_default();
    let purl = match family {
        "crates.io" => format!("pkg:cargo/{}@{version}", encode(name)),
        "npm" => match name.strip_prefix('@').and_then(|n| n.split_once('/')) {
            Some((scope, bare)) => format!("pkg:npm/%40{}/{}@{version}", encode(scope), encode(bare)),
            None => format!("pkg:npm/{}@{version}", encode(name)),
        },
        "PyPI" => format!(
            "pkg:pypi/{}@{version}",
            encode(&name.to_ascii_lowercase().replace('_', "-"))
        ),
        "Go" => format!("pkg:golang/{}@{version}", path_encode(name)),
        "Maven" => {
            let (group, artifact) = name
                .split_once(':')
                .filter(|(group, artifact)| !group.is_empty() && !artifact.is_empty() && !artifact.contains(':'))?;
            format!("pkg:maven/{}/{}@{version}", path_encode(group), encode(artifact))
        }
        "Packagist" => format!("pkg:composer/{}@{version}", path_encode(name)),
        "RubyGems" => format!("pkg:gem/{}@{version}", encode(name)),
        "Debian" | "Ubuntu" => format!(
            "pkg:deb/{}/{}@{version}?distro={}-{}{upstream}",
            family.to_ascii_lowercase(),
            encode(name),
            family.to_ascii_lowercase(),
            encode(release)
        ),
        "Alpine" => format!(
            "pkg:apk/alpine/{}@{version}?distro={}{upstream}",
            encode(name),
            encode(release.trim_start_matches('v'))
        ),
        "Red Hat" | "Rocky Linux" | "AlmaLinux" | "Fedora" | "Amazon Linux" | "openSUSE" => {
            let (vendor, distro) = rpm_vendor(family, release)?;
            // purl keeps the epoch in a qualifier, out of the version.
            let (epoch, bare) = match package.version.split_once(':') {
                Some((epoch, bare)) => (format!("&epoch={}", encode(epoch)), bare),
                None => (String::new(), package.version.as_str()),
            };
            format!(
                "pkg:rpm/{vendor}/{}@{}?distro={}{epoch}",
                encode(name),
                encode(bare),
                encode(&distro)
            )
        }
        _ => return None,
    };
    Some(purl)
}

/// (purl vendor, distro qualifier) of an RPM ecosystem: `Red Hat:enterprise_linux:9` →
/// (`redhat`, `rhel-9`).
fn rpm_vendor(family: &str, release: &str) -> Option<(&'static str, String)> {
    let version = release.rsplit(':').next().unwrap_or(release);
    Some(match family {
        "Red Hat" => ("redhat", format!("rhel-{version}")),
        "Rocky Linux" => ("rocky", format!("rocky-{version}")),
        "AlmaLinux" => ("almalinux", format!("almalinux-{version}")),
        "Fedora" => ("fedora", format!("fedora-{version}")),
        "Amazon Linux" => ("amazon", format!("amzn-{version}")),
        "openSUSE" => (
            "opensuse",
            format!("opensuse-leap-{}", version.trim_start_matches("Leap ")),
        ),
        _ => return None,
    })
}

/// Percent-encodes what a purl component may not hold.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' | b'+' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Each `/`-separated segment encoded, the slashes kept (Go module paths, Maven groups are
/// namespaces).
fn path_encode(text: &str) -> String {
    text.split('/').map(encode).collect::<Vec<_>>().join("/")
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a package came from, for humans: the file, and the layer of an image.
fn origin(package: &Package) -> Vec<(&'static str, String)> {
    let mut out = vec![("palisade:path", package.path.clone())];
    if let Some(layer) = &package.layer {
        out.push(("palisade:layer:index", layer.index.to_string()));
        out.push(("palisade:layer:digest", layer.digest.clone()));
    }
    out
}

/// One entry per distinct purl (binary packages of one source stay apart; the same package found
/// in two files is listed once, at the first).
fn distinct(report: &Report) -> Vec<(&Package, String)> {
    let mut seen = BTreeMap::new();
    for package in &report.packages {
        if let Some(purl) = purl(package) {
            seen.entry(purl).or_insert(package);
        }
    }
    let mut out: Vec<(&Package, String)> = seen.into_iter().map(|(purl, p)| (p, purl)).collect();
    out.sort_by(|a, b| (&a.0.path, &a.1).cmp(&(&b.0.path, &b.1)));
    out
}

fn tool_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A license as CycloneDX takes it: an SPDX expression when it looks like one, else a name.
fn cyclonedx_license(license: &str) -> Value {
    if is_spdx_expression(license) {
        json!({ "expression": license })
    } else {
        json!({ "license": { "name": license } })
    }
}

/// Identifiers joined by AND/OR/WITH, with parentheses: the shape of an SPDX expression. The
/// identifiers are not checked against the license list; a name with spaces is not one.
fn is_spdx_expression(text: &str) -> bool {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    !words.is_empty()
        && words.iter().enumerate().all(|(i, word)| {
            if i % 2 == 1 {
                matches!(*word, "AND" | "OR" | "WITH")
            } else {
                word.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
                    && word.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            }
        })
        && words.len() % 2 == 1
}

/// CycloneDX 1.6 JSON.
pub fn cyclonedx(report: &Report) -> String {
    let components: Vec<Value> = distinct(report)
        .into_iter()
        .map(|(package, purl)| {
            let mut component = json!({
                "type": "library",
                "bom-ref": purl,
                "name": package.binary.as_deref().unwrap_or(&package.name),
                "version": package.version,
                "purl": purl,
                "properties": origin(package)
                    .into_iter()
                    .map(|(name, value)| json!({ "name": name, "value": value }))
                    .collect::<Vec<_>>(),
            });
            if let Some(license) = &package.license {
                component["licenses"] = json!([cyclonedx_license(license)]);
            }
            component
        })
        .collect();
    let bom = json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "version": 1,
        "metadata": {
            "timestamp": now(),
            "tools": { "components": [{ "type": "application", "name": "palisade", "version": tool_version() }] },
            "component": { "type": if report.target.contains('!') || report.target.contains(':') { "container" } else { "application" }, "name": report.target, "bom-ref": "target" },
        },
        "components": components,
    });
    serde_json::to_string_pretty(&bom).unwrap_or_default() + "\n"
}

/// SPDX 2.3 JSON.
pub fn spdx(report: &Report) -> String {
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Target",
        "name": report.target,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "APPLICATION",
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Target",
    })];
    for (index, (package, purl)) in distinct(report).into_iter().enumerate() {
        let id = format!("SPDXRef-Package-{}", index + 1);
        let declared = package
            .license
            .as_deref()
            .filter(|l| is_spdx_expression(l))
            .unwrap_or("NOASSERTION");
        let source: Vec<String> = origin(package).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        packages.push(json!({
            "SPDXID": id,
            "name": package.binary.as_deref().unwrap_or(&package.name),
            "versionInfo": package.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "copyrightText": "NOASSERTION",
            "sourceInfo": source.join(" "),
            "externalRefs": [{ "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl }],
        }));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Target",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    let document = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": report.target,
        "documentNamespace": format!("https://palisade.dev/spdxdocs/{}", uuid::Uuid::new_v4()),
        "creationInfo": { "created": now(), "creators": [format!("Tool: palisade-{}", tool_version())] },
        "packages": packages,
        "relationships": relationships,
    });
    serde_json::to_string_pretty(&document).unwrap_or_default() + "\n"
}

/// A JSON file that is an SBOM: CycloneDX (`bomFormat`) or SPDX (`spdxVersion`).
pub fn is_sbom(name: &str, text: &str) -> bool {
    name.ends_with(".json")
        && (text.contains("\"bomFormat\"") || text.contains("\"spdxVersion\""))
        && serde_json::from_str::<Value>(text).is_ok_and(|v| {
            v.get("bomFormat").and_then(Value::as_str) == Some("CycloneDX") || v.get("spdxVersion").is_some()
        })
}

/// The packages an SBOM lists, by purl (nested CycloneDX components too); each named by the
/// SBOM's path and the line of its purl.
pub fn packages(path: &str, text: &str) -> Vec<Package> {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    let mut purls = Vec::new();
    collect_cyclonedx(&value, &mut purls);
    for package in value.get("packages").and_then(Value::as_array).into_iter().flatten() {
        for reference in package
            .get("externalRefs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if reference.get("referenceType").and_then(Value::as_str) == Some("purl") {
                if let Some(locator) = reference.get("referenceLocator").and_then(Value::as_str) {
                    let license = package
                        .get("licenseDeclared")
                        .and_then(Value::as_str)
                        .filter(|l| !matches!(*l, "NOASSERTION" | "NONE"));
                    purls.push((locator.to_string(), license.map(str::to_string)));
                }
            }
        }
    }
    let lines = LineIndex::new(text);
    purls
        .into_iter()
        .filter_map(|(purl, license)| {
            let line = text.find(&purl).map(|at| lines.line_of(at)).unwrap_or(0);
            from_purl(&purl, path, line).map(|p| p.with_license(license))
        })
        .collect()
}

fn collect_cyclonedx(value: &Value, out: &mut Vec<(String, Option<String>)>) {
    for component in value.get("components").and_then(Value::as_array).into_iter().flatten() {
        if let Some(purl) = component.get("purl").and_then(Value::as_str) {
            let license = component
                .get("licenses")
                .and_then(Value::as_array)
                .and_then(|l| l.first())
                .and_then(|l| {
                    l.get("expression")
                        .or_else(|| l.get("license").and_then(|x| x.get("id").or_else(|| x.get("name"))))
                })
                .and_then(Value::as_str)
                .map(str::to_string);
            out.push((purl.to_string(), license));
        }
        collect_cyclonedx(component, out);
    }
}

/// A purl as a package in its OSV ecosystem; `None` for types without advisories here.
pub fn from_purl(purl: &str, path: &str, line: usize) -> Option<Package> {
    let rest = purl.strip_prefix("pkg:")?;
    let rest = rest.split('#').next().unwrap_or(rest);
    let (rest, qualifiers) = rest.split_once('?').unwrap_or((rest, ""));
    let qualifiers: BTreeMap<String, String> = qualifiers
        .split('&')
        .filter_map(|q| q.split_once('='))
        .map(|(k, v)| (k.to_ascii_lowercase(), decode(v)))
        .collect();
    // A distro names a release (`debian-12`, `rocky-9.3`, `3.19`): nothing else becomes an ecosystem.
    if qualifiers.get("distro").is_some_and(|d| {
        !d.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    }) {
        return None;
    }
    let (rest, version) = rest.rsplit_once('@')?;
    let version = decode(version);
    let (kind, path_part) = rest.split_once('/')?;
    let segments: Vec<String> = path_part.split('/').map(decode).collect();
    let name = segments.last()?.clone();
    let namespace = segments[..segments.len() - 1].join("/");
    let with_namespace = |separator: &str| {
        if namespace.is_empty() {
            name.clone()
        } else {
            format!("{namespace}{separator}{name}")
        }
    };
    let (ecosystem, advisory_name, binary) = match kind.to_ascii_lowercase().as_str() {
        "cargo" => ("crates.io".to_string(), name.clone(), None),
        "npm" => ("npm".to_string(), with_namespace("/"), None),
        "pypi" => ("PyPI".to_string(), name.clone(), None),
        "golang" => ("Go".to_string(), with_namespace("/"), None),
        "maven" if !namespace.is_empty() && !name.contains(':') => ("Maven".to_string(), with_namespace(":"), None),
        "composer" => ("Packagist".to_string(), with_namespace("/"), None),
        "gem" => ("RubyGems".to_string(), name.clone(), None),
        "rpm" => {
            let distro = qualifiers.get("distro")?;
            let (id, release) = distro.rsplit_once('-')?;
            let ecosystem = crate::vuln::rpm::os_ecosystem(id, release)?;
            let version = match qualifiers.get("epoch") {
                Some(epoch) => format!("{epoch}:{version}"),
                None => version.clone(),
            };
            return Some(Package::new(&ecosystem, name.clone(), version, path, line));
        }
        "deb" | "apk" => {
            let distro = qualifiers.get("distro")?;
            let ecosystem = os_ecosystem_of(&namespace, distro)?;
            let source = qualifiers
                .get("upstream")
                .map(|u| u.split(['@', ' ']).next().unwrap_or(u).to_string());
            match source {
                Some(source) => (ecosystem, source, Some(name.clone())),
                None => (ecosystem, name.clone(), None),
            }
        }
        _ => return None,
    };
    Some(Package::new(&ecosystem, advisory_name, version, path, line).with_binary(binary))
}

/// `debian` + `debian-12` / `bookworm` / `12` → `Debian:12`; `alpine` + `3.19.1` → `Alpine:v3.19`.
fn os_ecosystem_of(namespace: &str, distro: &str) -> Option<String> {
    let version = distro
        .strip_prefix(&format!("{namespace}-"))
        .unwrap_or(distro)
        .to_string();
    let version = match version.as_str() {
        "bookworm" => "12".to_string(),
        "bullseye" => "11".to_string(),
        "buster" => "10".to_string(),
        "trixie" => "13".to_string(),
        _ => version,
    };
    crate::vuln::packages::os_ecosystem(namespace, &version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_round_trip_to_the_packages_advisories_name() {
        let cases = [
            ("crates.io", "hyper", "0.14.9", None, "pkg:cargo/hyper@0.14.9"),
            ("npm", "@babel/core", "7.0.0", None, "pkg:npm/%40babel/core@7.0.0"),
            ("PyPI", "Django", "4.2.1", None, "pkg:pypi/django@4.2.1"),
            (
                "Go",
                "golang.org/x/text",
                "v0.3.7",
                None,
                "pkg:golang/golang.org/x/text@v0.3.7",
            ),
            ("Go", "stdlib", "1.20.1", None, "pkg:golang/stdlib@1.20.1"),
            (
                "Maven",
                "org.apache.logging.log4j:log4j-core",
                "2.14.1",
                None,
                "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
            ),
            (
                "Packagist",
                "guzzlehttp/guzzle",
                "7.4.0",
                None,
                "pkg:composer/guzzlehttp/guzzle@7.4.0",
            ),
            ("RubyGems", "rack", "2.2.3", None, "pkg:gem/rack@2.2.3"),
            (
                "Debian:12",
                "curl",
                "7.88.1-10+deb12u1",
                Some("libcurl4"),
                "pkg:deb/debian/libcurl4@7.88.1-10+deb12u1?distro=debian-12&upstream=curl",
            ),
            (
                "Alpine:v3.18",
                "curl",
                "8.3.0-r0",
                None,
                "pkg:apk/alpine/curl@8.3.0-r0?distro=3.18",
            ),
            (
                "Rocky Linux:9",
                "openssl-libs",
                "1:3.0.7-24.el9",
                None,
                "pkg:rpm/rocky/openssl-libs@3.0.7-24.el9?distro=rocky-9&epoch=1",
            ),
            (
                "Red Hat:enterprise_linux:9",
                "curl",
                "7.76.1-26.el9",
                None,
                "pkg:rpm/redhat/curl@7.76.1-26.el9?distro=rhel-9",
            ),
        ];
        for (ecosystem, name, version, binary, expected) in cases {
            let package = Package::new(ecosystem, name.to_string(), version.to_string(), "x", 1)
                .with_binary(binary.map(str::to_string));
            let purl = purl(&package).unwrap();
            assert_eq!(purl, expected);
            let back = from_purl(&purl, "x", 1).unwrap();
            assert_eq!(
                (
                    back.ecosystem.as_str(),
                    crate::vuln::osv::normalize_name(ecosystem, &back.name),
                    back.version.as_str()
                ),
                (ecosystem, crate::vuln::osv::normalize_name(ecosystem, name), version),
                "{purl}"
            );
        }
        assert!(from_purl("pkg:deb/debian/curl@1?distro=bookworm", "x", 1).is_some_and(|p| p.ecosystem == "Debian:12"));
        assert!(from_purl("pkg:generic/thing@1", "x", 1).is_none());
        assert!(from_purl("not a purl", "x", 1).is_none());
        assert!(
            from_purl("pkg:npm/%ZZ@%", "x", 1).is_some(),
            "bad escapes are kept, not a panic"
        );
    }

    #[test]
    fn license_expressions() {
        for yes in [
            "MIT",
            "Apache-2.0 OR MIT",
            "(MIT AND BSD-3-Clause)",
            "GPL-2.0-or-later WITH Classpath-exception-2.0",
        ] {
            assert!(is_spdx_expression(yes), "{yes}");
        }
        for no in ["", "BSD License", "MIT OR", "see LICENSE file"] {
            assert!(!is_spdx_expression(no), "{no}");
        }
    }
}
