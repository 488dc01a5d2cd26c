//! The documentation cannot drift from the code: every relative link (file and `#anchor`)
//! resolves; every `kubectl` and `secprov-operator` command shown in a fenced block parses
//! (the subcommands and flags exist: `secprov-operator` through the binary's own clap
//! definition, `kubectl` through its `--help`); docs/reference.md is exactly what the CRD
//! schema in crds/ generates; every condition reason the code can produce has its entry in
//! docs/troubleshooting.md. No cluster needed (kubectl only prints its help).
//!
//! After a CRD change: `SECPROV_BLESS_DOCS=1 cargo test --test docs` rewrites docs/reference.md.
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;
use serde::Deserialize as _;
use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every Markdown file a user or developer reads: the front door, the changelog, the
/// benchmarks and everything under docs/.
fn markdown_files() -> Vec<String> {
    let mut files: Vec<String> = ["README.md", "CHANGELOG.md", "BENCHMARKS.md"]
        .map(String::from)
        .to_vec();
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// A fenced code block: its info string (`bash`, `yaml`, empty, ...) and its lines.
struct Fence {
    info: String,
    lines: Vec<String>,
    line: usize,
}

/// The text outside fenced blocks (with line numbers) and the fenced blocks.
fn split_fences(text: &str) -> (Vec<(usize, String)>, Vec<Fence>) {
    let mut prose = Vec::new();
    let mut fences = Vec::new();
    let mut open: Option<Fence> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            match open.take() {
                Some(f) => fences.push(f),
                None => {
                    open = Some(Fence {
                        info: trimmed.trim_start_matches('`').trim().to_owned(),
                        lines: Vec::new(),
                        line: i + 1,
                    })
                }
            }
        } else if let Some(f) = open.as_mut() {
            f.lines.push(line.to_owned());
        } else {
            prose.push((i + 1, line.to_owned()));
        }
    }
    assert!(open.is_none(), "an unclosed code fence");
    (prose, fences)
}

/// The anchors of a Markdown file's headings, with GitHub's `-1`, `-2` for repeated ones.
fn anchors(text: &str) -> BTreeSet<String> {
    let (prose, _) = split_fences(text);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose {
        if !line.starts_with('#') {
            continue;
        }
        let base = secprov_harness::markdown_anchor(line.trim_start_matches('#'));
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// Link targets of one line of prose (`[text](target)`), ignoring inline code spans.
fn link_targets(line: &str) -> Vec<String> {
    let mut outside = String::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 0 {
            outside.push_str(part);
        }
        outside.push(' ');
    }
    let mut targets = Vec::new();
    let mut rest = outside.as_str();
    while let Some(at) = rest.find("](") {
        let tail = &rest[at + 2..];
        let Some(end) = tail.find(')') else { break };
        targets.push(tail[..end].trim().to_owned());
        rest = &tail[end..];
    }
    targets
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        let dir = Path::new(&file)
            .parent()
            .unwrap_or(Path::new(""))
            .to_owned();
        for (n, line) in split_fences(&text).0 {
            for target in link_targets(&line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
                let resolved = if path.is_empty() {
                    PathBuf::from(&file)
                } else {
                    dir.join(path)
                };
                if !root().join(&resolved).exists() {
                    broken.push(format!("{file}:{n}: {target}: no such file"));
                    continue;
                }
                let is_markdown = resolved.extension().is_some_and(|e| e == "md");
                if !anchor.is_empty() && is_markdown {
                    let target_text = std::fs::read_to_string(root().join(&resolved)).unwrap();
                    if !anchors(&target_text).contains(anchor) {
                        broken.push(format!("{file}:{n}: {target}: no heading #{anchor}"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > 50,
        "only {checked} links found: is the parser broken?"
    );
}

/// Shell words of a command line: quotes removed, `#` comments dropped; the line is split at
/// unquoted `|`, `&&`, `||` and `;` into separate commands.
fn shell_commands(line: &str) -> Vec<Vec<String>> {
    let mut commands = vec![Vec::new()];
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    let end_word = |word: &mut String, in_word: &mut bool, commands: &mut Vec<Vec<String>>| {
        if *in_word {
            commands.last_mut().unwrap().push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => break,
            (None, c) if c.is_whitespace() => end_word(&mut word, &mut in_word, &mut commands),
            (None, '|' | ';' | '&') if !(c == '&' && chars.peek() != Some(&'&') && in_word) => {
                end_word(&mut word, &mut in_word, &mut commands);
                if matches!(chars.peek(), Some('|' | '&')) {
                    chars.next();
                }
                commands.push(Vec::new());
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    end_word(&mut word, &mut in_word, &mut commands);
    commands
        .into_iter()
        .map(|words| {
            // Leading environment assignments and a YAML list dash are not part of the command.
            let mut words: Vec<String> = words
                .into_iter()
                .skip_while(|w| w == "-" || w == "$" || is_assignment(w))
                .collect();
            // Redirections and their targets.
            let mut i = 0;
            while i < words.len() {
                let w = &words[i];
                if matches!(w.as_str(), ">" | ">>" | "<" | "2>") {
                    words.drain(i..(i + 2).min(words.len()));
                } else if w.starts_with('>') || w.starts_with("2>") {
                    words.remove(i);
                } else {
                    i += 1;
                }
            }
            words
        })
        .filter(|w| !w.is_empty())
        .collect()
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
    })
}

/// Commands shown in the fenced blocks of a file: `kubectl ...` and `secprov-operator ...`
/// lines (also after `$ ` prompts and inside YAML scripts), with `\` continuations joined.
/// Blocks marked `text` are synopses or output and are not commands.
fn commands_in(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for fence in split_fences(text).1 {
        if fence.info == "text" {
            continue;
        }
        // A block that shows prompts (`$ kubectl ...`) mixes commands with their output: only
        // the prompted lines are commands there.
        let prompted = fence.lines.iter().any(|l| l.starts_with("$ "));
        let mut logical = String::new();
        let mut start = fence.line;
        for (i, line) in fence.lines.iter().enumerate() {
            if prompted && !line.starts_with("$ ") && logical.is_empty() {
                continue;
            }
            if logical.is_empty() {
                start = fence.line + 1 + i;
            }
            match line.trim_end().strip_suffix('\\') {
                Some(head) => {
                    logical.push_str(head);
                    logical.push(' ');
                    continue;
                }
                None => logical.push_str(line),
            }
            for words in shell_commands(&std::mem::take(&mut logical)) {
                if words[0] == "kubectl" || words[0] == "secprov-operator" {
                    out.push((start, words));
                }
            }
        }
    }
    out
}

/// What `kubectl <path> --help` says: its subcommands and its flags (long name, short letter,
/// whether it takes a value).
#[derive(Default)]
struct KubectlHelp {
    subcommands: BTreeSet<String>,
    flags: Vec<(String, Option<char>, bool)>,
}

fn parse_kubectl_help(text: &str) -> KubectlHelp {
    let mut help = KubectlHelp::default();
    let mut in_commands = false;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            in_commands = line.contains("Commands");
            continue;
        }
        let trimmed = line.trim_start();
        if in_commands
            && line.starts_with("  ")
            && !line.starts_with("   ")
            && let Some(name) = trimmed.split_whitespace().next()
        {
            help.subcommands.insert(name.to_owned());
        }
        if trimmed.starts_with('-')
            && trimmed.ends_with(':')
            && let Some((names, default)) = trimmed.trim_end_matches(':').split_once('=')
            && names.contains("--")
        {
            let (short, long) = match names.split_once(", ") {
                Some((s, l)) => (s.trim_start_matches('-').chars().next(), l),
                None => (None, names),
            };
            let takes_value = !matches!(default, "true" | "false");
            help.flags
                .push((long.trim_start_matches("--").to_owned(), short, takes_value));
        }
    }
    help
}

struct Kubectl {
    cache: HashMap<Vec<String>, KubectlHelp>,
    global: KubectlHelp,
}

impl Kubectl {
    fn new() -> Self {
        let global = parse_kubectl_help(&kubectl_output(&["options"]));
        assert!(
            global.flags.iter().any(|(l, _, _)| l == "namespace"),
            "kubectl options lists no --namespace"
        );
        Kubectl {
            cache: HashMap::new(),
            global,
        }
    }

    fn help(&mut self, path: &[String]) -> &KubectlHelp {
        self.cache.entry(path.to_vec()).or_insert_with(|| {
            let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
            args.push("--help");
            parse_kubectl_help(&kubectl_output(&args))
        })
    }

    /// Whether the flag exists for the subcommand (or globally), and whether it takes a value.
    fn flag(&mut self, path: &[String], word: &str) -> Option<bool> {
        let name = word.split_once('=').map_or(word, |(n, _)| n);
        let matches = |h: &KubectlHelp| {
            h.flags.iter().find_map(|(long, short, value)| {
                let hit = match name.strip_prefix("--") {
                    Some(l) => l == long,
                    None => name.len() == 2 && name[1..].chars().next() == *short,
                };
                hit.then_some(*value && !word.contains('='))
            })
        };
        let local = matches(self.help(path));
        local.or_else(|| matches(&self.global))
    }

    /// Checks one `kubectl ...` command: every subcommand word and every flag exists.
    fn check(&mut self, words: &[String]) -> Result<(), String> {
        let mut path: Vec<String> = Vec::new();
        let mut arguments_started = false;
        let mut i = 1;
        while i < words.len() {
            let word = &words[i];
            i += 1;
            if word.starts_with('-') && word.len() > 1 {
                match self.flag(&path, word) {
                    Some(true) => i += 1,
                    Some(false) => {}
                    None => return Err(format!("kubectl {}: no flag {word}", path.join(" "))),
                }
            } else if !arguments_started && self.help(&path).subcommands.contains(word) {
                path.push(word.clone());
            } else if path.is_empty() {
                return Err(format!("kubectl has no subcommand {word:?}"));
            } else {
                arguments_started = true;
            }
        }
        Ok(())
    }
}

fn kubectl_output(args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", "/dev/null")
        .output()
        .expect("kubectl is installed (a prerequisite of make test)");
    assert!(out.status.success(), "kubectl {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_secprov_operator(words: &[String]) -> Result<(), String> {
    match secprov::cli::args::Cli::try_parse_from(words) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn every_command_in_a_fenced_block_parses() {
    let mut kubectl = Kubectl::new();
    let mut failures = Vec::new();
    let (mut kubectl_count, mut secprov_count) = (0, 0);
    for file in markdown_files() {
        for (line, words) in commands_in(&read(&file)) {
            let result = if words[0] == "kubectl" {
                kubectl_count += 1;
                kubectl.check(&words)
            } else {
                secprov_count += 1;
                check_secprov_operator(&words)
            };
            if let Err(e) = result {
                failures.push(format!("{file}:{line}: {}\n    {e}", words.join(" ")));
            }
        }
    }
    println!("checked {kubectl_count} kubectl and {secprov_count} secprov-operator commands");
    assert!(
        failures.is_empty(),
        "commands that do not parse:\n{}",
        failures.join("\n")
    );
    assert!(
        kubectl_count > 20 && secprov_count > 3,
        "too few commands found"
    );
}

#[test]
fn the_command_checks_refuse_what_does_not_exist() {
    let mut kubectl = Kubectl::new();
    let words = |s: &str| shell_commands(s).remove(0);
    assert!(
        kubectl
            .check(&words("kubectl -n ns get pods -o yaml"))
            .is_ok()
    );
    assert!(
        kubectl
            .check(&words("kubectl auth can-i list secrets --all-namespaces"))
            .is_ok()
    );
    assert!(
        kubectl
            .check(&words("kubectl get pods --no-such-flag"))
            .is_err()
    );
    assert!(kubectl.check(&words("kubectl frobnicate pods")).is_err());
    assert!(
        kubectl
            .check(&words("kubectl create rolebinding x --clusterroll=y"))
            .is_err()
    );
    assert!(check_secprov_operator(&words("secprov-operator plan -f x.yaml -n ns")).is_ok());
    assert!(check_secprov_operator(&words("secprov-operator plan --namespace ns")).is_err());
    assert!(check_secprov_operator(&words("secprov-operator export --conection c")).is_err());
    assert_eq!(
        shell_commands("A=1 kubectl get x -o yaml | kubectl apply -f - # comment"),
        vec![words("kubectl get x -o yaml"), words("kubectl apply -f -")]
    );
    assert_eq!(
        words("kubectl patch x --type merge -p '{\"a\": 1}' > out"),
        [
            "kubectl",
            "patch",
            "x",
            "--type",
            "merge",
            "-p",
            "{\"a\": 1}"
        ]
    );
}

// ---- docs/reference.md, generated from the CRD schema ----

/// One cell: whitespace collapsed, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .replace('\n', " "),
    }
}

/// The type column: type, format, required, and the schema's constraints.
fn type_cell(schema: &Value, required: bool) -> String {
    let mut parts = Vec::new();
    let ty = schema["type"].as_str().unwrap_or("any");
    let ty = match ty {
        "array" => format!(
            "array of {}",
            schema["items"]["type"].as_str().unwrap_or("any")
        ),
        "object" if schema.get("additionalProperties").is_some() => format!(
            "map of {}",
            schema["additionalProperties"]["type"]
                .as_str()
                .unwrap_or("any")
        ),
        _ => ty.to_owned(),
    };
    parts.push(match schema["format"].as_str() {
        Some(f) => format!("{ty} ({f})"),
        None => ty,
    });
    if required {
        parts.push("required".into());
    }
    if let Some(values) = schema["enum"].as_sequence() {
        let values: Vec<String> = values.iter().map(|v| format!("`{}`", scalar(v))).collect();
        parts.push(format!("one of {}", values.join(", ")));
    }
    for (key, label) in [
        ("default", "default"),
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("minProperties", "min entries"),
        ("maxProperties", "max entries"),
        ("pattern", "pattern"),
    ] {
        if let Some(v) = schema.get(key) {
            parts.push(format!("{label} `{}`", scalar(v)));
        }
    }
    if schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true) {
        parts.push("any JSON".into());
    }
    cell(&parts.join(", "))
}

/// One table row per field, depth first, in the schema's (alphabetical) order.
fn field_rows(path: &str, schema: &Value, required: bool, rows: &mut Vec<String>) {
    let mut description = schema["description"].as_str().unwrap_or("").to_owned();
    if let Some(rules) = schema["x-kubernetes-validations"].as_sequence() {
        for rule in rules {
            let message = rule["message"]
                .as_str()
                .or(rule["rule"].as_str())
                .unwrap_or("");
            description.push_str(&format!(" Checked at apply: {message}"));
        }
    }
    rows.push(format!(
        "| `{path}` | {} | {} |",
        type_cell(schema, required),
        cell(&description)
    ));
    let required_here: BTreeSet<&str> = schema["required"]
        .as_sequence()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(props) = schema["properties"].as_mapping() {
        for (name, child) in props {
            let name = name.as_str().unwrap_or_default();
            let child_path = format!("{path}.{name}");
            field_rows(&child_path, child, required_here.contains(name), rows);
        }
    }
    // The row of an array's items or a map's values repeats the field's own row: only their
    // fields are listed.
    if let Some(items) = schema.get("items")
        && (items.get("properties").is_some() || items.get("items").is_some())
    {
        let mut items_rows = Vec::new();
        field_rows(&format!("{path}[]"), items, false, &mut items_rows);
        rows.extend(items_rows.into_iter().skip(1));
    }
    if let Some(values) = schema.get("additionalProperties")
        && values.get("properties").is_some()
    {
        let mut value_rows = Vec::new();
        field_rows(&format!("{path}.<key>"), values, false, &mut value_rows);
        rows.extend(value_rows.into_iter().skip(1));
    }
}

/// docs/reference.md as the CRDs in crds/secprov.dev.yaml describe it.
fn reference_markdown() -> String {
    let mut out = String::from(
        "# API reference\n\n\
         <!-- Generated from crds/secprov.dev.yaml by tests/docs.rs; do not edit. After a CRD \
         change: SECPROV_BLESS_DOCS=1 cargo test --test docs -->\n\n\
         Every field of both custom resources, generated from the CRD schema the operator \
         installs (`secprov-operator crd`, `crds/secprov.dev.yaml`), so it cannot drift: \
         `tests/docs.rs` fails when this page differs from the schema. The same text is what \
         `kubectl explain` shows. \"Checked at apply\" rules are CEL validations the API server \
         enforces; a refused apply prints their message.\n",
    );
    let text = read("crds/secprov.dev.yaml");
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd = Value::deserialize(doc).expect("CRD YAML");
        let spec = &crd["spec"];
        let names = &spec["names"];
        let kind = names["kind"].as_str().expect("kind");
        for version in spec["versions"].as_sequence().expect("versions") {
            let schema = &version["schema"]["openAPIV3Schema"];
            out.push_str(&format!("\n## {kind}\n\n"));
            let list = |v: &Value| {
                v.as_sequence()
                    .map(|s| {
                        s.iter()
                            .map(|x| format!("`{}`", scalar(x)))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                    .join(", ")
            };
            out.push_str(&format!(
                "`{}/{}`, {}, plural `{}`, short names {}, categories {}.\n\n{}\n",
                spec["group"].as_str().unwrap_or_default(),
                version["name"].as_str().unwrap_or_default(),
                spec["scope"].as_str().unwrap_or_default(),
                names["plural"].as_str().unwrap_or_default(),
                list(&names["shortNames"]),
                list(&names["categories"]),
                cell(schema["description"].as_str().unwrap_or_default()),
            ));
            if let Some(columns) = version["additionalPrinterColumns"].as_sequence() {
                let names: Vec<String> = columns
                    .iter()
                    .map(|c| format!("`{}`", scalar(&c["name"])))
                    .collect();
                out.push_str(&format!("\n`kubectl get` columns: {}.\n", names.join(", ")));
            }
            for part in ["spec", "status"] {
                let Some(part_schema) = schema["properties"].get(part) else {
                    continue;
                };
                out.push_str(&format!(
                    "\n### {kind} {part}\n\n| field | type | description |\n| --- | --- | --- |\n"
                ));
                let mut rows = Vec::new();
                field_rows(part, part_schema, false, &mut rows);
                for row in rows {
                    out.push_str(&row);
                    out.push('\n');
                }
            }
        }
    }
    out
}

#[test]
fn the_reference_is_generated_from_the_crd_schema() {
    let generated = reference_markdown();
    if std::env::var_os("SECPROV_BLESS_DOCS").is_some() {
        std::fs::write(root().join("docs/reference.md"), &generated).expect("write");
    }
    let current = read("docs/reference.md");
    if current != generated {
        let first = current
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(current.lines().count().min(generated.lines().count()));
        panic!(
            "docs/reference.md differs from the CRD schema from line {} on; regenerate it with \
             SECPROV_BLESS_DOCS=1 cargo test --test docs\n  file:      {:?}\n  generated: {:?}",
            first + 1,
            current.lines().nth(first),
            generated.lines().nth(first)
        );
    }
    // Every field with a description is in it.
    assert!(generated.contains("`spec.connectionRef`"));
    assert!(generated.contains("`spec.keystone.protocols.<key>.mapping.rules`"));
}

// ---- docs/troubleshooting.md covers every condition reason ----

/// The `"..."` literal right after `marker` in `line`, if it is a CamelCase word.
fn literal_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let tail = &line[line.find(marker)? + marker.len()..];
    let word = &tail[..tail.find('"')?];
    (word.starts_with(|c: char| c.is_ascii_uppercase())
        && word.chars().all(|c| c.is_ascii_alphanumeric()))
    .then_some(word)
}

/// The lines of a source file up to its first inline `#[cfg(test)] mod name {` (a
/// `#[cfg(test)] mod tests;` declaration ends nothing).
fn without_inline_test_modules(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| {
            w[0].trim() == "#[cfg(test)]" && w[1].starts_with("mod ") && w[1].ends_with('{')
        })
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

/// Every condition reason the code can produce: the `reason()` strings of the one error type
/// (src/error.rs), the `REASON_*` constants and the literal `reason: "..."` values of the
/// status code, outside unit tests.
fn reasons_in_code() -> BTreeSet<String> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("src"), &mut files);
    let mut reasons = BTreeSet::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with("tests.rs") || name == "fixtures.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = without_inline_test_modules(&text);
        let is_error_type = file.ends_with("src/error.rs");
        for line in code {
            let found = [
                literal_after(line, ": &str = \"").filter(|_| line.contains("const REASON_")),
                literal_after(line, "reason: \""),
                literal_after(line, "=> \"").filter(|_| is_error_type),
            ];
            reasons.extend(found.into_iter().flatten().map(String::from));
        }
    }
    reasons
}

#[test]
fn every_condition_reason_has_a_troubleshooting_entry() {
    let reasons = reasons_in_code();
    let expected = [
        "SecretNotFound",
        "RemoteTimeout",
        "AlreadyManaged",
        "Available",
        "FederationPending",
    ];
    for expected in expected {
        assert!(
            reasons.contains(expected),
            "the scan missed {expected}: {reasons:?}"
        );
    }
    let doc = read("docs/troubleshooting.md");
    let headings: BTreeSet<String> = split_fences(&doc)
        .0
        .into_iter()
        .filter_map(|(_, l)| {
            l.strip_prefix("### ")
                .map(|h| h.trim().trim_matches('`').to_owned())
        })
        .collect();
    let missing: Vec<&String> = reasons.iter().filter(|r| !headings.contains(*r)).collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md has no `### Reason` entry for {missing:?}"
    );
    let unknown: Vec<&String> = headings
        .iter()
        .filter(|h| h.chars().all(|c| c.is_ascii_alphanumeric()) && !reasons.contains(*h))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/troubleshooting.md documents reasons the code never produces: {unknown:?}"
    );
}
