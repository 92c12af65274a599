//! The console's files, compiled into the binary (no CDN, nothing fetched at run time).

pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
}

const ASSETS: &[(&str, Asset)] = &[
    (
        "index.html",
        Asset {
            body: include_bytes!("../assets/index.html"),
            content_type: "text/html; charset=utf-8",
        },
    ),
    (
        "console.js",
        Asset {
            body: include_bytes!("../assets/console.js"),
            content_type: "text/javascript; charset=utf-8",
        },
    ),
    (
        "console.css",
        Asset {
            body: include_bytes!("../assets/console.css"),
            content_type: "text/css; charset=utf-8",
        },
    ),
    (
        "favicon.svg",
        Asset {
            body: include_bytes!("../assets/favicon.svg"),
            content_type: "image/svg+xml",
        },
    ),
];

/// The asset called `name`, if there is one.
pub fn get(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|(n, _)| *n == name).map(|(_, asset)| asset)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_has_no_inline_script_or_style_and_loads_only_its_own_files() {
        let page = std::str::from_utf8(super::get("index.html").unwrap().body).unwrap();
        for tag in page.split('<').skip(1) {
            let tag = tag.split('>').next().unwrap_or_default();
            assert!(!tag.contains(" on"), "no inline event handlers: <{tag}>");
            assert!(!tag.contains("style="), "no inline style: <{tag}>");
            assert!(
                !tag.contains("http:") && !tag.contains("https:") && !tag.contains("//"),
                "no outside URL: <{tag}>"
            );
            if tag.starts_with("script") {
                assert!(tag.contains("src=\"/ui/assets/"), "scripts are files: <{tag}>");
            }
        }
        assert!(!page.contains("<style"), "no style element");
        assert!(page.contains("<script src=\"/ui/assets/console.js\" defer></script>"));
        assert!(super::get("../Cargo.toml").is_none());
    }
}
