//! The file editor: view (with line ranges), create, str_replace and insert.

use std::fmt::Write as _;

use super::ToolError;
use super::workspace::Workspace;

/// The most a view shows; longer output is cut with a note.
pub const MAX_VIEW_BYTES: usize = 32 * 1024;

/// Cuts `text` to [`MAX_VIEW_BYTES`] on a character boundary, saying so.
fn capped(mut text: String) -> String {
    if text.len() > MAX_VIEW_BYTES {
        let mut cut = MAX_VIEW_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let omitted = text.len() - cut;
        text.truncate(cut);
        let _ = write!(
            text,
            "\n[... {omitted} more bytes not shown: view a line range ...]"
        );
    }
    text
}

/// A file's lines numbered from 1 (`start..=end` when given), or a
/// directory's entries.
pub fn view(
    workspace: &Workspace,
    path: &str,
    range: Option<(usize, usize)>,
) -> Result<String, ToolError> {
    if workspace.is_dir(path)? {
        let mut entries = workspace.entries(path)?;
        entries.sort();
        return Ok(capped(entries.join("\n")));
    }
    let text = workspace.read_to_string(path)?;
    let lines: Vec<&str> = text.lines().collect();
    let (start, end) = match range {
        None => (1, lines.len()),
        Some((start, end)) => {
            if start == 0 || start > end.max(1) || start > lines.len().max(1) {
                return Err(ToolError::new(format!(
                    "invalid range {start}-{end}: {path} has {} lines, numbered from 1",
                    lines.len()
                )));
            }
            (start, end.min(lines.len()))
        }
    };
    let mut shown = String::new();
    for (number, line) in lines.iter().enumerate().take(end).skip(start - 1) {
        let _ = writeln!(shown, "{:>6}\t{line}", number + 1);
    }
    Ok(capped(shown))
}

/// Creates `path` with `text`; an existing file is not overwritten.
pub fn create(workspace: &Workspace, path: &str, text: &str) -> Result<String, ToolError> {
    workspace.write(path, text.as_bytes(), true)?;
    Ok(format!("created {path} ({} lines)", text.lines().count()))
}

/// Replaces the one occurrence of `old` in `path` with `new`.
pub fn str_replace(
    workspace: &Workspace,
    path: &str,
    old: &str,
    new: &str,
) -> Result<String, ToolError> {
    if old.is_empty() {
        return Err(ToolError::new(
            "old_str is empty: give the exact text to replace",
        ));
    }
    let text = workspace.read_to_string(path)?;
    let found: Vec<usize> = text.match_indices(old).map(|(at, _)| at).collect();
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    match found.as_slice() {
        [] => Err(ToolError::new(format!(
            "old_str does not occur in {path}: view the file and copy the text exactly, whitespace included"
        ))),
        [at] => {
            let line = line_of(*at);
            let changed = format!("{}{new}{}", &text[..*at], &text[at + old.len()..]);
            workspace.write(path, changed.as_bytes(), false)?;
            let last = line + new.lines().count().saturating_sub(1);
            let context = view(
                workspace,
                path,
                Some((line.saturating_sub(3).max(1), last + 3)),
            )?;
            Ok(format!("replaced 1 occurrence in {path}:\n{context}"))
        }
        many => {
            let lines: Vec<String> = many.iter().map(|at| line_of(*at).to_string()).collect();
            Err(ToolError::new(format!(
                "old_str occurs {} times in {path} (lines {}): include more surrounding text so it occurs once",
                many.len(),
                lines.join(", ")
            )))
        }
    }
}

/// Inserts `text` after line `after` of `path` (0: at the top).
pub fn insert(
    workspace: &Workspace,
    path: &str,
    after: usize,
    text: &str,
) -> Result<String, ToolError> {
    let original = workspace.read_to_string(path)?;
    let mut lines: Vec<&str> = original.lines().collect();
    if after > lines.len() {
        return Err(ToolError::new(format!(
            "{path} has {} lines: insert after 0 to {}",
            lines.len(),
            lines.len()
        )));
    }
    let added: Vec<&str> = text.lines().collect();
    let count = added.len();
    lines.splice(after..after, added);
    let mut changed = lines.join("\n");
    if original.ends_with('\n') || original.is_empty() {
        changed.push('\n');
    }
    workspace.write(path, changed.as_bytes(), false)?;
    let context = view(
        workspace,
        path,
        Some(((after + 1).saturating_sub(2).max(1), after + count + 2)),
    )?;
    Ok(format!(
        "inserted {count} lines after line {after} of {path}:\n{context}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace_with(file: &str, text: &str) -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join(file), text).expect("write");
        let workspace = Workspace::new(dir.path()).expect("a workspace");
        (dir, workspace)
    }

    #[test]
    fn view_numbers_lines_and_honours_ranges() {
        let (_dir, ws) = workspace_with("a.txt", "one\ntwo\nthree\n");
        assert_eq!(
            view(&ws, "a.txt", None).expect("view"),
            "     1\tone\n     2\ttwo\n     3\tthree\n"
        );
        assert_eq!(
            view(&ws, "a.txt", Some((2, 9))).expect("view"),
            "     2\ttwo\n     3\tthree\n"
        );
        assert!(view(&ws, "a.txt", Some((0, 1))).is_err());
        assert!(view(&ws, "a.txt", Some((5, 6))).is_err());
        assert_eq!(view(&ws, ".", None).expect("a listing"), "a.txt");
    }

    #[test]
    fn str_replace_needs_exactly_one_match() {
        let (dir, ws) = workspace_with("lib.rs", "let a = 1;\nlet b = 1;\n");
        let twice = str_replace(&ws, "lib.rs", "= 1;", "= 2;").expect_err("two matches");
        assert!(
            twice.0.contains("occurs 2 times") && twice.0.contains("lines 1, 2"),
            "{twice}"
        );
        let none = str_replace(&ws, "lib.rs", "let c", "x").expect_err("no match");
        assert!(none.0.contains("does not occur"), "{none}");
        str_replace(&ws, "lib.rs", "let b = 1;", "let b = 2;").expect("one match");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("lib.rs")).expect("read"),
            "let a = 1;\nlet b = 2;\n"
        );
    }

    #[test]
    fn create_and_insert() {
        let (dir, ws) = workspace_with("notes.md", "# Notes\n");
        assert!(create(&ws, "notes.md", "x").is_err(), "no overwrite");
        create(&ws, "docs/new.md", "hello\n").expect("create");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("docs/new.md")).expect("read"),
            "hello\n"
        );
        insert(&ws, "notes.md", 1, "- one\n- two").expect("insert");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("notes.md")).expect("read"),
            "# Notes\n- one\n- two\n"
        );
        insert(&ws, "notes.md", 0, "top").expect("insert at the top");
        assert!(
            std::fs::read_to_string(dir.path().join("notes.md"))
                .expect("read")
                .starts_with("top\n# Notes")
        );
        assert!(insert(&ws, "notes.md", 99, "x").is_err());
    }

    #[test]
    fn long_views_are_cut_with_a_note() {
        let (_dir, ws) = workspace_with("big.txt", &"x".repeat(100_000));
        let shown = view(&ws, "big.txt", None).expect("view");
        assert!(shown.len() < MAX_VIEW_BYTES + 200 && shown.contains("more bytes not shown"));
    }
}
