//! A SQL file's text as people read it (for `kiln docs`): each statement as written with
//! the comment block above it, and tokens classified for highlighting. Works on text that
//! does not parse, and never fails: text the tokenizer rejects is one plain run.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};
use kiln_contracts::dialect::KilnDialect;

/// One statement of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementText {
    /// 1-based lines of its first and last token.
    pub first_line: u64,
    pub last_line: u64,
    /// The statement as written, from its first token to its `;` (or the end of file).
    pub sql: String,
    /// The `--` lines right above its first line (no blank line between), each without
    /// its dashes and one space; `None` when there are none.
    pub description: Option<String>,
}

/// The statements of `text`, in order (empty when it does not tokenize).
pub fn statements(text: &str) -> Vec<StatementText> {
    let Ok(tokens) = Tokenizer::new(&KilnDialect::default(), text).tokenize_with_location() else {
        return Vec::new();
    };
    let offsets = Offsets::new(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut first: Option<&TokenWithSpan> = None;
    let mut last: Option<&TokenWithSpan> = None;
    let mut finish = |first: &TokenWithSpan, last: &TokenWithSpan| {
        let (start, end) = (offsets.at(first.span.start), offsets.at(last.span.end));
        let first_line = first.span.start.line;
        out.push(StatementText {
            first_line,
            last_line: last.span.end.line,
            sql: text.get(start..end).unwrap_or_default().to_owned(),
            description: description(&lines, first_line),
        });
    };
    for token in &tokens {
        match &token.token {
            Token::Whitespace(_) => {}
            Token::SemiColon => {
                if let Some(f) = first.take() {
                    finish(f, token);
                }
                last = None;
            }
            _ => {
                first.get_or_insert(token);
                last = Some(token);
            }
        }
    }
    if let (Some(f), Some(l)) = (first, last) {
        finish(f, l);
    }
    out
}

/// The `--` lines right above 1-based line `line`.
fn description(lines: &[&str], line: u64) -> Option<String> {
    let mut block = Vec::new();
    let mut at = usize::try_from(line).ok()?.checked_sub(1)?;
    while at > 0 {
        at -= 1;
        let Some(text) = lines.get(at).map(|l| l.trim()).and_then(|l| l.strip_prefix("--")) else {
            break;
        };
        block.push(text.strip_prefix(' ').unwrap_or(text).trim_end());
    }
    if block.is_empty() {
        return None;
    }
    block.reverse();
    Some(block.join("\n"))
}

/// What a run of highlighted text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenClass {
    Keyword,
    Identifier,
    String,
    Number,
    Comment,
    Operator,
    Plain,
}

impl TokenClass {
    /// A short name (the site's CSS class).
    pub fn as_str(self) -> &'static str {
        match self {
            TokenClass::Keyword => "kw",
            TokenClass::Identifier => "id",
            TokenClass::String => "str",
            TokenClass::Number => "num",
            TokenClass::Comment => "com",
            TokenClass::Operator => "op",
            TokenClass::Plain => "",
        }
    }
}

/// `sql` cut into classified runs whose concatenation is `sql` exactly.
pub fn highlight(sql: &str) -> Vec<(TokenClass, &str)> {
    let Ok(tokens) = Tokenizer::new(&KilnDialect::default(), sql).tokenize_with_location() else {
        return vec![(TokenClass::Plain, sql)];
    };
    let offsets = Offsets::new(sql);
    let mut out: Vec<(TokenClass, &str)> = Vec::new();
    let mut pos = 0;
    for token in &tokens {
        let (start, end) = (offsets.at(token.span.start), offsets.at(token.span.end));
        if start < pos || end < start || end > sql.len() {
            continue;
        }
        if start > pos {
            out.push((TokenClass::Plain, &sql[pos..start]));
        }
        let class = match &token.token {
            Token::Word(w) if w.quote_style.is_none() && w.keyword != Keyword::NoKeyword => TokenClass::Keyword,
            Token::Word(_) => TokenClass::Identifier,
            Token::Number(..) => TokenClass::Number,
            Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::DollarQuotedString(_) => TokenClass::String,
            Token::Whitespace(Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_)) => {
                TokenClass::Comment
            }
            Token::Whitespace(_) | Token::EOF => TokenClass::Plain,
            _ => TokenClass::Operator,
        };
        out.push((class, &sql[start..end]));
        pos = end;
    }
    if pos < sql.len() {
        out.push((TokenClass::Plain, &sql[pos..]));
    }
    out
}

/// Byte offsets of sqlparser's (line, column) locations, both 1-based, columns in chars.
struct Offsets<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, line_starts }
    }

    fn at(&self, location: datafusion::sql::sqlparser::tokenizer::Location) -> usize {
        let line = usize::try_from(location.line).unwrap_or(usize::MAX);
        let Some(&start) = line.checked_sub(1).and_then(|l| self.line_starts.get(l)) else {
            return self.text.len();
        };
        let column = usize::try_from(location.column).unwrap_or(1).saturating_sub(1);
        self.text[start..].char_indices().nth(column).map_or(self.text.len(), |(i, _)| start + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_keep_their_text_and_the_comment_block_above() {
        let text = "-- not this one\n\n-- Revenue per day.\n--\n-- Second paragraph.\nCREATE PRODUCT a AS\n  SELECT 'x;y' AS s; -- trailing\nCREATE PRODUCT b AS SELECT 1 AS n";
        let found = statements(text);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].sql, "CREATE PRODUCT a AS\n  SELECT 'x;y' AS s;");
        assert_eq!((found[0].first_line, found[0].last_line), (6, 7));
        assert_eq!(found[0].description.as_deref(), Some("Revenue per day.\n\nSecond paragraph."));
        assert_eq!(found[1].sql, "CREATE PRODUCT b AS SELECT 1 AS n");
        assert_eq!(found[1].description, None, "a trailing comment on the line above is not a description");
    }

    #[test]
    fn highlighting_covers_the_text_exactly() {
        let sql = "SELECT \"Näme\", 'ü;' AS s, 42 -- note\nFROM t WHERE x >= 1.5";
        let runs = highlight(sql);
        assert_eq!(runs.iter().map(|(_, s)| *s).collect::<String>(), sql);
        let class_of = |text: &str| runs.iter().find(|(_, s)| *s == text).map(|(c, _)| *c);
        assert_eq!(class_of("SELECT"), Some(TokenClass::Keyword));
        assert_eq!(class_of("\"Näme\""), Some(TokenClass::Identifier));
        assert_eq!(class_of("'ü;'"), Some(TokenClass::String));
        assert_eq!(class_of("42"), Some(TokenClass::Number));
        assert_eq!(class_of("-- note\n"), Some(TokenClass::Comment));
        assert_eq!(class_of(">="), Some(TokenClass::Operator));
        assert_eq!(class_of("t"), Some(TokenClass::Identifier));
        assert_eq!(highlight("SELECT 'open"), vec![(TokenClass::Plain, "SELECT 'open")]);
    }
}
