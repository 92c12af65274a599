//! The properties the fuzz targets under `fuzz/` check on arbitrary input, here so that `cargo test`
//! replays the checked-in corpora with the same code on stable (`tests/fuzz_corpora.rs`). Each
//! function panics when a property breaks.

use std::cmp::Ordering;

use crate::vuln::version::Scheme;

/// `dockerfile`: parsing and checking any text never panics, and every finding points at a line of
/// the file.
pub fn dockerfile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::dockerfile::parse(&text);
    let lines = text.lines().count().max(1);
    for finding in crate::dockerfile::check("Dockerfile", &text) {
        assert!(finding.line <= lines + 1, "finding at line {} of {lines}", finding.line);
    }
}

const SCHEMES: [Scheme; 9] = [
    Scheme::Semver,
    Scheme::Go,
    Scheme::Pep440,
    Scheme::Debian,
    Scheme::Alpine,
    Scheme::RubyGems,
    Scheme::Maven,
    Scheme::Packagist,
    Scheme::Rpm,
];

/// `version_order`: the first three lines of the input as versions; in every ecosystem's scheme the
/// order is a total order where it is defined: a version equals itself, `a < b` exactly when
/// `b > a`, and `a <= b <= c` gives `a <= c`.
pub fn version_order(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (a, b, c) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    for scheme in SCHEMES {
        for v in [a, b, c] {
            if let Some(order) = scheme.compare(v, v) {
                assert_eq!(order, Ordering::Equal, "{scheme:?}: {v:?} is not equal to itself");
            }
        }
        let ab = scheme.compare(a, b);
        if let (Some(ab), Some(ba)) = (ab, scheme.compare(b, a)) {
            assert_eq!(ab, ba.reverse(), "{scheme:?}: {a:?} vs {b:?} is not antisymmetric");
        }
        if let (Some(ab), Some(bc), Some(ac)) = (ab, scheme.compare(b, c), scheme.compare(a, c)) {
            if ab != Ordering::Greater && bc != Ordering::Greater {
                assert_ne!(
                    ac,
                    Ordering::Greater,
                    "{scheme:?}: {a:?} <= {b:?} <= {c:?} but {a:?} > {c:?}"
                );
            }
            if ab != Ordering::Less && bc != Ordering::Less {
                assert_ne!(
                    ac,
                    Ordering::Less,
                    "{scheme:?}: {a:?} >= {b:?} >= {c:?} but {a:?} < {c:?}"
                );
            }
        }
    }
}

/// `scan_yaml`: any text, as a manifest file: parsing is bounded (a too-deep document is refused
/// with its line), never panics, and every Kubernetes or Palisade-config finding points at a line of
/// the file.
pub fn scan_yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // Lines as YAML counts them (and editors show them): a lone CR breaks a line too.
    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
    let documents = match crate::yaml::parse_documents(&text) {
        Ok(documents) => documents,
        Err(error) => {
            assert!(error.line <= lines + 1, "error at line {} of {lines}", error.line);
            return;
        }
    };
    let mut namespaces = crate::kubernetes::Namespaces::default();
    let mut findings = crate::kubernetes::check("manifest.yaml", &documents, &mut namespaces);
    for document in documents.iter().filter(|d| crate::palisade_config::is_config(d)) {
        findings.extend(crate::palisade_config::check("manifest.yaml", document));
    }
    for finding in findings {
        assert!(finding.line <= lines + 1, "finding at line {} of {lines}", finding.line);
    }
}

/// `image_tar`: any bytes as an image tarball (`docker save` or OCI layout, layers plain or gzip):
/// opening and scanning never panic, and whatever is not an image is refused with an error. The
/// bytes go through a file because the reader indexes the outer tar in place.
pub fn image_tar(data: &[u8]) {
    thread_local! {
        static FILE: std::path::PathBuf = std::env::temp_dir().join(format!(
            "palisade-fuzz-image-{}-{:?}.tar",
            std::process::id(),
            std::thread::current().id()
        ));
    }
    FILE.with(|path| {
        if std::fs::write(path, data).is_err() {
            return;
        }
        if let Some(mut image) = crate::image::open(path) {
            let _ = crate::image::scan(
                &mut image,
                "image.tar",
                &crate::secrets::Allowlist::default(),
                &|_, _| {},
            );
        }
        let _ = std::fs::remove_file(path);
    });
}

/// `installed`: any bytes as what an image or a tree can hold about its packages (an RPM header,
/// an executable, a Java archive, an SBOM, Python/Node/Composer/gem metadata, purls one per line):
/// reading never panics, and every package an SBOM yields has a purl that reads back as the same
/// package.
pub fn installed(data: &[u8]) {
    use crate::vuln::{installed, osv::normalize_name, rpm};
    let _ = rpm::parse_header(data);
    let _ = rpm::packages(data);
    let mut elf = b"\x7fELF".to_vec();
    elf.extend_from_slice(data);
    let _ = installed::go_buildinfo(&elf);
    let _ = installed::rust_auditable(data);
    let _ = installed::java_archive(data);
    let text = String::from_utf8_lossy(data);
    for kind in [
        installed::Installed::PythonMetadata,
        installed::Installed::NodePackage,
        installed::Installed::Composer,
        installed::Installed::Gemspec,
    ] {
        let _ = kind.packages("a-1.0.gemspec", &text);
    }
    let mut packages = crate::sbom::packages("app.cdx.json", &text);
    packages.extend(
        text.lines()
            .filter_map(|line| crate::sbom::from_purl(line.trim(), "purls", 1)),
    );
    for package in packages {
        let Some(purl) = crate::sbom::purl(&package) else {
            continue;
        };
        let back = crate::sbom::from_purl(&purl, "purls", 1)
            .unwrap_or_else(|| panic!("{purl} (from {package:?}) does not read back"));
        assert_eq!(
            (
                back.ecosystem.as_str(),
                normalize_name(&back.ecosystem, &back.name),
                back.version.as_str()
            ),
            (
                package.ecosystem.as_str(),
                normalize_name(&package.ecosystem, &package.name),
                package.version.as_str()
            ),
            "{purl}"
        );
    }
}
