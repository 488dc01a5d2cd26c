//! The user docs as the tests that check them read them.

/// GitHub's anchor of a Markdown heading (its `#`s, if any, dropped): lower case, punctuation
/// dropped, spaces to hyphens.
pub fn markdown_anchor(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}
