//! How large and how deeply nested one statement may be, checked on its tokens before
//! sqlparser sees it (project files and `kiln query` alike): past these, parsing and
//! planning cost grows with the square of an expression's depth, or exponentially.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location as SqlLocation, Token, TokenWithSpan};

/// The most operators one statement may hold. Planning recurses once per level of an
/// expression (a chain of `+` or `OR` is as deep as it is long) and its cost grows with
/// the square of that depth (measured on a `+` chain, release build: 2,000 terms 1 s,
/// 4,000 16 s, 8,000 68 s), so a statement past this is refused with its location rather
/// than planned for minutes (or, before the CLI's large stacks, overflowing the stack).
pub const MAX_OPERATORS: usize = 2_000;

/// How deeply the constructs that sqlparser parses twice when they fail may nest inside
/// each other. sqlparser tries `CAST(`, `NOT (`, `ARRAY[`, `SUBSTRING(`, ... as their
/// special syntax first and, when that fails, again as an identifier or function call:
/// an invalid statement with n of them nested costs 2^n (found by `cargo xtask fuzz`: 20
/// unclosed `CAST(` took 4.8 s in a debug build, 48 never finished). 12 bound that to
/// milliseconds; valid SQL nests them a few deep.
pub const MAX_NESTED_CONSTRUCTS: usize = 12;

/// The keywords whose bracketed syntax sqlparser retries on failure (each measured: 14
/// nested, followed by an error, take 2^14 times one; the other keywords take one).
const RETRIED: [Keyword; 18] = [
    Keyword::CAST,
    Keyword::TRY_CAST,
    Keyword::SAFE_CAST,
    Keyword::CONVERT,
    Keyword::TRY_CONVERT,
    Keyword::NOT,
    Keyword::CASE,
    Keyword::OVERLAY,
    Keyword::SUBSTRING,
    Keyword::SUBSTR,
    Keyword::FLOOR,
    Keyword::CEIL,
    Keyword::ARRAY,
    Keyword::CURRENT_DATE,
    Keyword::CURRENT_TIME,
    Keyword::CURRENT_TIMESTAMP,
    Keyword::LOCALTIME,
    Keyword::LOCALTIMESTAMP,
];

/// The first place in `tokens` where a statement passes [`MAX_OPERATORS`] operators or
/// [`MAX_NESTED_CONSTRUCTS`] nested constructs, and what it passes: checked on tokens,
/// before the parser, whose cost grows with the square (operators) or exponentially
/// (failing nested constructs) past them.
pub(crate) fn too_complex(tokens: &[TokenWithSpan]) -> Option<(SqlLocation, String)> {
    let mut operators = 0usize;
    // Open brackets: whether each opened a retried construct.
    let mut open: Vec<bool> = Vec::new();
    let mut nested = 0usize;
    let mut previous: Option<&Token> = None;
    for t in tokens {
        let operator = match &t.token {
            Token::SemiColon => {
                operators = 0;
                open.clear();
                nested = 0;
                false
            }
            Token::LParen | Token::LBracket => {
                let retried =
                    matches!(previous, Some(Token::Word(w)) if w.quote_style.is_none() && RETRIED.contains(&w.keyword));
                open.push(retried);
                if retried {
                    nested += 1;
                    if nested > MAX_NESTED_CONSTRUCTS {
                        return Some((
                            t.span.start,
                            format!(
                                "expression nested too deeply: more than {MAX_NESTED_CONSTRUCTS} CAST, NOT, CASE, ARRAY, SUBSTRING (...) inside each other"
                            ),
                        ));
                    }
                }
                false
            }
            Token::RParen | Token::RBracket => {
                if open.pop() == Some(true) {
                    nested -= 1;
                }
                false
            }
            Token::Plus | Token::Minus | Token::Mul | Token::Div | Token::Mod | Token::StringConcat => true,
            Token::Eq | Token::Neq | Token::Lt | Token::Gt | Token::LtEq | Token::GtEq => true,
            Token::Pipe | Token::Caret | Token::Ampersand => true,
            Token::Word(w) => matches!(w.keyword, Keyword::AND | Keyword::OR | Keyword::NOT | Keyword::CAST),
            _ => false,
        };
        if !matches!(t.token, Token::Whitespace(_)) {
            previous = Some(&t.token);
        }
        if operator {
            operators += 1;
            if operators > MAX_OPERATORS {
                return Some((
                    t.span.start,
                    format!(
                        "statement too large: more than {MAX_OPERATORS} operators in one statement (split it into products)"
                    ),
                ));
            }
        }
    }
    None
}
