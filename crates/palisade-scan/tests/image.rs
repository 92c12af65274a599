//! Image tarballs built by the test itself: a `docker save` image with a gzip layer, whiteouts (a
//! deleted file and an opaque directory), a dpkg status file and secrets in present and deleted
//! layers; and an OCI-layout Alpine image with an apk database.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use palisade_scan::finding::Severity;
use palisade_scan::scan;
use support::{auditable_elf, gzip, oci_tarball, options, tar_of, tar_with_modes, zip_of};

mod support;

/// (path, rule, (layer, removed in layer)) of a finding.
type Seen = (String, String, Option<(usize, Option<usize>)>);

fn write(path: &Path, files: &[(&str, &[u8])]) {
    std::fs::write(path, tar_of(files)).expect("write image");
}

/// Made-up credentials the image hides in layers that later ones delete (under fixtures/, which the
/// repository's own scan ignores).
const HIDDEN_TOKEN: &[u8] = include_bytes!("fixtures/image/config.env");
const OPAQUED_TOKEN: &[u8] = include_bytes!("fixtures/image/old.conf");

const DPKG_STATUS: &str = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\nSource: glibc\n\nPackage: curl\nStatus: install ok installed\nVersion: 7.88.1-10+deb12u1\nDescription: command line tool\n for transferring data\n\nPackage: removed-tool\nStatus: deinstall ok config-files\nVersion: 1.0\n";

fn docker_save_image(dir: &Path) -> PathBuf {
    let base = tar_of(&[
        (
            "etc/os-release",
            b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        ),
        ("var/lib/dpkg/status", DPKG_STATUS.as_bytes()),
        ("app/config.env", HIDDEN_TOKEN),
        ("etc/app/old.conf", OPAQUED_TOKEN),
    ]);
    let cleanup = tar_of(&[
        ("app/.wh.config.env", b""),
        ("etc/app/.wh..wh..opq", b""),
        ("etc/app/new.conf", b"mode = safe\n"),
    ]);
    let app = tar_of(&[(
        "app/settings.py",
        b"aws_secret_access_key = \"q8Zr2LmX0vT7pKs1aB3cD4eF5gH6iJ7kL8mN9oP0\"\n",
    )]);
    let config = serde_json::json!({
        "architecture": "amd64",
        "config": { "User": "", "Env": ["PATH=/usr/bin", "API_TOKEN=abc123XYZ789secret"], "ExposedPorts": { "22/tcp": {}, "8080/tcp": {} } },
        "history": [{ "created_by": "RUN echo building" }],
    });
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": ["shop/web:1.0"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"],
    }]);
    let path = dir.join("web.tar");
    let (base, config, manifest) = (gzip(&base), config.to_string(), manifest.to_string());
    write(
        &path,
        &[
            ("manifest.json", manifest.as_bytes()),
            ("config.json", config.as_bytes()),
            ("aaa/layer.tar", &base),
            ("bbb/layer.tar", &cleanup),
            ("ccc/layer.tar", &app),
        ],
    );
    path
}

fn oci_alpine_image(dir: &Path) -> PathBuf {
    let layer = gzip(&tar_of(&[
        ("etc/os-release", b"NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.18.4\n"),
        ("lib/apk/db/installed", b"C:Q1abc=\nP:curl\nV:8.3.0-r0\no:curl\n\nC:Q1def=\nP:libcurl\nV:8.3.0-r0\no:curl\n\nP:busybox\nV:1.36.1-r2\no:busybox\n"),
    ]));
    let config = serde_json::json!({ "config": { "User": "10001" } }).to_string();
    oci_tarball(
        &dir.join("alpine-oci.tar"),
        &config,
        &[(&layer, "application/vnd.oci.image.layer.v1.tar+gzip")],
    )
}

#[test]
fn docker_save_image_layers_whiteouts_packages_and_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = docker_save_image(dir.path());
    let report = scan(&image, &options(dir.path())).expect("scan");
    let found: BTreeSet<Seen> = report
        .findings
        .iter()
        .map(|f| {
            (
                f.path.clone(),
                f.rule.clone(),
                f.layer.as_ref().map(|l| (l.index, l.removed_in)),
            )
        })
        .collect();
    let expected: BTreeSet<Seen> = [
        ("web.tar", "IMG001", None),
        ("web.tar", "IMG002", None),
        ("web.tar", "IMG003", None),
        // Deleted by a whiteout in layer 1, still in layer 0's tarball.
        ("web.tar!/app/config.env", "SEC003", Some((0, Some(1)))),
        // Removed by an opaque directory in layer 1.
        ("web.tar!/etc/app/old.conf", "SEC008", Some((0, Some(1)))),
        ("web.tar!/app/settings.py", "SEC002", Some((2, None))),
        ("web.tar!/var/lib/dpkg/status", "DEBIAN-CVE-2023-38545", Some((0, None))),
    ]
    .into_iter()
    .map(|(p, r, l)| (p.to_string(), r.to_string(), l))
    .collect();
    assert_eq!(found, expected);
    let deleted = report
        .findings
        .iter()
        .find(|f| f.rule == "SEC003")
        .expect("deleted secret");
    assert!(deleted.message.contains("removed in layer 1"), "{}", deleted.message);
    let curl = report
        .findings
        .iter()
        .find(|f| f.rule == "DEBIAN-CVE-2023-38545")
        .expect("curl");
    let vulnerability = curl.vulnerability.as_ref().expect("vulnerability");
    assert_eq!(
        (vulnerability.package.as_str(), vulnerability.fixed.as_deref()),
        ("curl", Some("7.88.1-10+deb12u4"))
    );
    assert_eq!(curl.severity, Severity::Critical, "CVSS 9.8");
    assert_eq!(
        report.packages_checked, 2,
        "installed dpkg packages only (glibc by its source name, curl)"
    );
    let env = report.findings.iter().find(|f| f.rule == "IMG002").expect("env secret");
    assert!(!env.message.contains("abc123XYZ789secret"), "masked: {}", env.message);
}

#[test]
fn oci_layout_alpine_image_with_apk_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = oci_alpine_image(dir.path());
    let report = scan(&image, &options(dir.path())).expect("scan");
    let rules: Vec<(&str, &str)> = report
        .findings
        .iter()
        .map(|f| (f.path.as_str(), f.rule.as_str()))
        .collect();
    assert_eq!(
        rules,
        vec![("alpine-oci.tar!/lib/apk/db/installed", "ALPINE-CVE-2023-38545")]
    );
    let vulnerability = report.findings[0].vulnerability.as_ref().expect("vulnerability");
    assert_eq!(vulnerability.fixed.as_deref(), Some("8.4.0-r0"));
    assert_eq!(report.packages_checked, 3);
}

#[test]
fn a_truncated_image_is_an_input_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = docker_save_image(dir.path());
    let bytes = std::fs::read(&image).expect("read");
    let manifest_only = tar_of(&[(
        "manifest.json",
        b"[{\"Config\":\"config.json\",\"Layers\":[\"aaa/layer.tar\"]}]",
    )]);
    std::fs::write(&image, &manifest_only).expect("write");
    assert!(scan(&image, &options(dir.path())).is_err());
    assert!(bytes.len() > manifest_only.len());
}

/// An ELF-looking executable carrying Go's build information, larger than the 2 MiB read for
/// secrets when `padding` says so (it is then searched as it streams).
fn go_binary(go_version: &str, modinfo: &str, padding: usize) -> Vec<u8> {
    let mut binary = b"\x7fELF\x02\x01\x01".to_vec();
    binary.resize(padding, 0);
    binary.extend_from_slice(&palisade_scan::vuln::installed::encode_buildinfo(go_version, modinfo));
    binary.extend_from_slice(&[0u8; 4096]);
    binary
}

/// Every language package kind an image can hold, each with a version an advisory covers and
/// one it does not; each finding names the file and layer it came from.
/// An OCI image tarball holding every language package kind (see the test below).
fn language_image(dir: &Path) -> PathBuf {
    let log4j_core = |version: &str| {
        zip_of(&[(
            "META-INF/maven/org.apache.logging.log4j/log4j-core/pom.properties",
            format!("groupId=org.apache.logging.log4j\nartifactId=log4j-core\nversion={version}\n").as_bytes(),
        )])
    };
    let war = zip_of(&[
        ("WEB-INF/lib/log4j-core-2.14.1.jar", &log4j_core("2.14.1")),
        (
            "META-INF/maven/com.example/shop/pom.properties",
            b"groupId=com.example\nartifactId=shop\nversion=1.0\n",
        ),
    ]);
    let rust_app = auditable_elf(
        r#"{"packages":[{"name":"rust-app","version":"0.1.0","source":"local","root":true,"dependencies":[1,2]},{"name":"hyper","version":"0.14.9","source":"crates.io"},{"name":"cc","version":"1.0.0","source":"crates.io","kind":"build"}]}"#,
    );
    let old_go = "path\texample.com/old\nmod\texample.com/old\t(devel)\t\ndep\tgolang.org/x/text\tv0.3.7\th1:x=\n";
    let new_go = "path\texample.com/new\nmod\texample.com/new\t(devel)\t\ndep\tgolang.org/x/text\tv0.3.8\th1:y=\n";
    let python = tar_with_modes(&[
        (
            "usr/lib/python3/dist-packages/Django-4.2.1.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: Django\nVersion: 4.2.1\n\nLong description\n",
            0o644,
        ),
        (
            "usr/local/lib/python3.11/site-packages/requests-2.31.0-py3.11.egg-info/PKG-INFO",
            b"Metadata-Version: 1.1\nName: requests\nVersion: 2.31.0\n",
            0o644,
        ),
    ]);
    let apps = tar_with_modes(&[
        ("srv/web/node_modules/lodash/package.json", br#"{"name": "lodash", "version": "4.17.20"}"#, 0o644),
        ("srv/api/node_modules/lodash/package.json", br#"{"name": "lodash", "version": "4.17.21"}"#, 0o644),
        ("srv/web/node_modules/lodash/fp/package.json", br#"{"name": "lodash", "version": "1.0.0"}"#, 0o644),
        (
            "srv/php/vendor/composer/installed.json",
            br#"{"packages": [{"name": "guzzlehttp/guzzle", "version": "7.4.0"}, {"name": "monolog/monolog", "version": "2.3.5"}]}"#,
            0o644,
        ),
        (
            "usr/local/bundle/specifications/rack-2.2.3.gemspec",
            b"Gem::Specification.new do |s|\n  s.name = \"rack\".freeze\n  s.version = \"2.2.3\"\nend\n",
            0o644,
        ),
        (
            "usr/local/bundle/specifications/rack-test-2.2.4.gemspec",
            b"Gem::Specification.new do |s|\n  s.name = \"rack\".freeze\n  s.version = \"2.2.4\"\nend\n",
            0o644,
        ),
        ("usr/local/tomcat/webapps/shop.war", &war, 0o644),
        ("opt/tools/log4j-core-2.17.1.jar", &log4j_core("2.17.1"), 0o644),
        ("usr/local/bin/old-tool", &go_binary("go1.20.1", old_go, 3 * 1024 * 1024), 0o755),
        ("usr/local/bin/new-tool", &go_binary("go1.20.2", new_go, 4096), 0o755),
        ("usr/local/bin/rust-app", &rust_app, 0o755),
        // Not executable: not read as a binary.
        ("usr/share/doc/not-run", &go_binary("go1.19.0", old_go, 4096), 0o644),
    ]);
    let layers = [python, gzip(&apps)];
    let config = serde_json::json!({ "config": { "User": "10001" } }).to_string();
    oci_tarball(
        &dir.join("apps.tar"),
        &config,
        &[
            (&layers[0], "application/vnd.oci.image.layer.v1.tar"),
            (&layers[1], "application/vnd.oci.image.layer.v1.tar+gzip"),
        ],
    )
}

#[test]
fn language_packages_inside_an_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = language_image(dir.path());
    let report = scan(&path, &options(dir.path())).expect("scan");
    let found: BTreeSet<(String, String, usize)> = report
        .findings
        .iter()
        .map(|f| {
            let vulnerability = f.vulnerability.as_ref().expect("only vulnerabilities");
            (
                f.path.clone(),
                format!("{} {} {}", f.rule, vulnerability.package, vulnerability.installed),
                f.layer.as_ref().map(|l| l.index).expect("a layer"),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, usize)> = [
        (
            "apps.tar!/usr/lib/python3/dist-packages/Django-4.2.1.dist-info/METADATA",
            "GHSA-jh3w-4vvf-mjgr Django 4.2.1",
            0,
        ),
        (
            "apps.tar!/srv/web/node_modules/lodash/package.json",
            "GHSA-35jh-r3h4-6jhm lodash 4.17.20",
            1,
        ),
        (
            "apps.tar!/srv/php/vendor/composer/installed.json",
            "GHSA-w248-ffj2-4v5q guzzlehttp/guzzle 7.4.0",
            1,
        ),
        (
            "apps.tar!/usr/local/bundle/specifications/rack-2.2.3.gemspec",
            "GHSA-wq4h-7r42-5hrr rack 2.2.3",
            1,
        ),
        (
            "apps.tar!/usr/local/tomcat/webapps/shop.war",
            "GHSA-jfh8-c2jp-5v3q org.apache.logging.log4j:log4j-core 2.14.1",
            1,
        ),
        (
            "apps.tar!/usr/local/bin/old-tool",
            "GO-2022-1059 golang.org/x/text v0.3.7",
            1,
        ),
        ("apps.tar!/usr/local/bin/old-tool", "GO-2023-1621 stdlib 1.20.1", 1),
        ("apps.tar!/usr/local/bin/rust-app", "RUSTSEC-2021-0078 hyper 0.14.9", 1),
    ]
    .into_iter()
    .map(|(p, v, l)| (p.to_string(), v.to_string(), l))
    .collect();
    assert_eq!(found, expected);
    assert!(report.packages_checked >= 14, "{}", report.packages_checked);
}

/// (advisory, package, installed version) of every vulnerability finding; names as their
/// ecosystem compares them (a purl spells PyPI's `Django` as `django`).
fn vulnerabilities(report: &palisade_scan::Report) -> BTreeSet<(String, String, String)> {
    report
        .findings
        .iter()
        .filter_map(|f| {
            let v = f.vulnerability.as_ref()?;
            let name = palisade_scan::vuln::osv::normalize_name(&v.ecosystem, &v.package);
            Some((f.rule.clone(), name, v.installed.clone()))
        })
        .collect()
}

fn validator(schema: &str) -> jsonschema::Validator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sbom");
    let load = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).expect("schema")).expect("schema json")
    };
    let mut options = jsonschema::options();
    for name in ["spdx.SNAPSHOT.schema.json", "jsf-0.82.SNAPSHOT.schema.json"] {
        options = options.with_resource(
            format!("http://cyclonedx.org/schema/{name}"),
            jsonschema::Resource::from_contents(load(name)),
        );
    }
    options.build(&load(schema)).expect("schema compiles")
}

fn assert_valid(validator: &jsonschema::Validator, document: &serde_json::Value) {
    let errors: Vec<String> = validator
        .iter_errors(document)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .take(10)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// CycloneDX 1.6 and SPDX 2.3 out, each valid against its official schema, listing every package
/// with its purl, license and layer; each read back in finds exactly what the image scan found.
#[test]
fn sboms_out_validate_and_read_back_in_find_the_same_advisories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = options(dir.path());
    let cyclonedx = validator("bom-1.6.SNAPSHOT.schema.json");
    let spdx = validator("spdx-2.3.schema.json");
    for image in [language_image(dir.path()), docker_save_image(dir.path())] {
        let report = scan(&image, &options).expect("scan");
        let expected = vulnerabilities(&report);
        assert!(!expected.is_empty());
        for (format, text) in [
            ("cdx", palisade_scan::sbom::cyclonedx(&report)),
            ("spdx", palisade_scan::sbom::spdx(&report)),
        ] {
            let document: serde_json::Value = serde_json::from_str(&text).expect("json");
            assert_valid(if format == "cdx" { &cyclonedx } else { &spdx }, &document);
            let sbom = dir.path().join(format!("app.{format}.json"));
            std::fs::write(&sbom, &text).expect("write");
            let again = scan(&sbom, &options).expect("scan the SBOM");
            assert_eq!(vulnerabilities(&again), expected, "{format} of {}", image.display());
            assert!(again.findings.iter().all(|f| f.path == sbom.display().to_string()));
        }
    }
    // What a component says: purl, license, file and layer.
    let report = scan(&language_image(dir.path()), &options).expect("scan");
    let bom: serde_json::Value = serde_json::from_str(&palisade_scan::sbom::cyclonedx(&report)).expect("json");
    let lodash = bom["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["purl"] == "pkg:npm/lodash@4.17.20")
        .expect("lodash listed");
    let properties: BTreeSet<(String, String)> = lodash["properties"]
        .as_array()
        .expect("properties")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(properties.contains(&(
        "palisade:path".into(),
        "apps.tar!/srv/web/node_modules/lodash/package.json".into()
    )));
    assert!(properties.contains(&("palisade:layer:index".into(), "1".into())));
    let purls: BTreeSet<&str> = bom["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter_map(|c| c["purl"].as_str())
        .collect();
    for purl in [
        "pkg:golang/stdlib@1.20.1",
        "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
        "pkg:composer/guzzlehttp/guzzle@7.4.0",
        "pkg:gem/rack@2.2.3",
        "pkg:pypi/django@4.2.1",
        "pkg:cargo/hyper@0.14.9",
    ] {
        assert!(purls.contains(purl), "{purl} in {purls:?}");
    }
    // The broken document is refused: the schema checks have teeth.
    let mut broken = bom.clone();
    broken["components"][0]["type"] = "gadget".into();
    assert!(!cyclonedx.is_valid(&broken));
}

/// `rpmbuild` and `rpm` (Debian's `rpm` package; .ci/run installs it) make a real `rpmdb.sqlite`:
/// packages built from specs and installed into a database with `--justdb`.
fn real_rpmdb(dir: &Path, packages: &[(&str, Option<u32>, &str, &str)]) -> Option<Vec<u8>> {
    if std::process::Command::new("rpmbuild")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: rpmbuild is not installed (Debian package rpm; .ci/run installs it)");
        return None;
    }
    let top = dir.join("rpmbuild");
    let database = dir.join("rpmdb");
    std::fs::create_dir_all(&database).expect("db dir");
    let mut built = Vec::new();
    for (name, epoch, version, release) in packages {
        let spec = dir.join(format!("{name}.spec"));
        let epoch = epoch.map(|e| format!("Epoch: {e}\n")).unwrap_or_default();
        std::fs::write(
            &spec,
            format!("Name: {name}\nVersion: {version}\nRelease: {release}\n{epoch}Summary: test\nLicense: MIT\nBuildArch: noarch\n%description\ntest\n%files\n"),
        )
        .expect("spec");
        let status = std::process::Command::new("rpmbuild")
            .args(["--quiet", "--define"])
            .arg(format!("_topdir {}", top.display()))
            .arg("-bb")
            .arg(&spec)
            .status()
            .expect("rpmbuild");
        assert!(status.success(), "rpmbuild {name}");
        built.push(top.join(format!("RPMS/noarch/{name}-{version}-{release}.noarch.rpm")));
    }
    let output = std::process::Command::new("rpm")
        .arg("--dbpath")
        .arg(&database)
        .args(["--justdb", "--nodeps", "--noscripts", "-i"])
        .args(&built)
        .output()
        .expect("rpm");
    assert!(
        output.status.success(),
        "rpm -i: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(std::fs::read(database.join("rpmdb.sqlite")).expect("rpmdb.sqlite"))
}

/// A Rocky Linux 9 image whose RPM database rpm itself wrote: packages with epochs, matched
/// against Rocky's advisories in rpm's version order; a database that is not one is a warning.
#[test]
fn rpm_database_of_a_rocky_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(database) = real_rpmdb(
        dir.path(),
        &[
            ("openssl-libs", Some(1), "3.0.7", "20.el9"),
            ("curl", None, "7.76.1", "26.el9"),
        ],
    ) else {
        return;
    };
    let layer = tar_of(&[
        (
            "etc/os-release",
            b"NAME=\"Rocky Linux\"\nID=\"rocky\"\nVERSION_ID=\"9.3\"\n",
        ),
        ("var/lib/rpm/rpmdb.sqlite", &database),
    ]);
    let broken = tar_of(&[("usr/lib/sysimage/rpm/rpmdb.sqlite", b"not a database")]);
    let config = serde_json::json!({ "config": { "User": "10001" } }).to_string();
    let image = oci_tarball(
        &dir.path().join("rocky.tar"),
        &config,
        &[
            (&layer, "application/vnd.oci.image.layer.v1.tar"),
            (&broken, "application/vnd.oci.image.layer.v1.tar"),
        ],
    );
    let report = scan(&image, &options(dir.path())).expect("scan");
    let found: Vec<(String, String, String)> = report
        .findings
        .iter()
        .filter_map(|f| {
            let v = f.vulnerability.as_ref()?;
            Some((f.rule.clone(), v.package.clone(), v.installed.clone()))
        })
        .collect();
    assert_eq!(
        found,
        [(
            "RLSA-2023:6575".to_string(),
            "openssl-libs".to_string(),
            "1:3.0.7-20.el9".to_string()
        )],
        "curl 7.76.1-26.el9 is the fixed release itself"
    );
    let openssl = &report.findings[0];
    assert_eq!(openssl.path, "rocky.tar!/var/lib/rpm/rpmdb.sqlite");
    assert_eq!(openssl.layer.as_ref().map(|l| l.index), Some(0));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("usr/lib/sysimage/rpm/rpmdb.sqlite") && w.contains("not an SQLite database")),
        "{:?}",
        report.warnings
    );
    let bom: serde_json::Value = serde_json::from_str(&palisade_scan::sbom::cyclonedx(&report)).expect("json");
    let purls: Vec<&str> = bom["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter_map(|c| c["purl"].as_str())
        .collect();
    assert!(
        purls.contains(&"pkg:rpm/rocky/openssl-libs@3.0.7-20.el9?distro=rocky-9&epoch=1"),
        "{purls:?}"
    );
}
