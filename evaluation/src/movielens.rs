//! Readers for the two MovieLens layouts: ML-1M (`users.dat`, `movies.dat`, `ratings.dat`,
//! `::`-separated) and ML-100K (`u.user`, `u.item`, `u.genre`, `u.data`). Both are latin-1.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kvrec_core::labels;

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: i64,
    pub gender: String,
    pub age: String,
    pub occupation: String,
    pub zip_code: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Movie {
    pub id: i64,
    pub title: String,
    pub genres: String,
    pub year: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rating {
    pub user_id: i64,
    pub movie_id: i64,
    pub rating: i64,
    pub ts: i64,
}

/// A whole data set in memory (ML-1M's 1M ratings are ~32 MB as structs).
#[derive(Debug, Default)]
pub struct Dataset {
    pub users: Vec<User>,
    pub movies: Vec<Movie>,
    pub ratings: Vec<Rating>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Ml1m,
    Ml100k,
}

impl Layout {
    pub fn detect(dir: &Path) -> Result<Layout> {
        if dir.join("movies.dat").exists() {
            Ok(Layout::Ml1m)
        } else if dir.join("u.item").exists() {
            Ok(Layout::Ml100k)
        } else {
            bail!(
                "{} holds neither movies.dat (ML-1M layout) nor u.item (ML-100K layout); \
                 point --from at an unpacked MovieLens folder",
                dir.display()
            )
        }
    }
}

/// MovieLens files are ISO-8859-1: each byte is the code point of the same value.
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn read_latin1(path: PathBuf) -> Result<String> {
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(latin1(&bytes))
}

fn fields<'a>(
    line: &'a str,
    sep: &str,
    n: usize,
    file: &str,
    lineno: usize,
) -> Result<Vec<&'a str>> {
    let parts: Vec<&str> = line.split(sep).collect();
    if parts.len() < n {
        bail!(
            "{file} line {lineno}: expected {n} fields separated by '{sep}', found {}",
            parts.len()
        );
    }
    Ok(parts)
}

fn int(text: &str, file: &str, lineno: usize) -> Result<i64> {
    text.trim()
        .parse()
        .with_context(|| format!("{file} line {lineno}: '{text}' is not an integer"))
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty())
}

/// Reads a MovieLens folder of either layout.
pub fn read(dir: &Path) -> Result<Dataset> {
    match Layout::detect(dir)? {
        Layout::Ml1m => read_ml1m(dir),
        Layout::Ml100k => read_ml100k(dir),
    }
}

fn read_ml1m(dir: &Path) -> Result<Dataset> {
    let mut data = Dataset::default();
    for (n, line) in lines(&read_latin1(dir.join("users.dat"))?) {
        let f = fields(line, "::", 5, "users.dat", n)?;
        let age = int(f[2], "users.dat", n)? as u32;
        let occupation = int(f[3], "users.dat", n)? as u32;
        data.users.push(User {
            id: int(f[0], "users.dat", n)?,
            gender: labels::gender(f[1]),
            age: labels::ml1m_age(age).map_or_else(|| age.to_string(), String::from),
            occupation: labels::ml1m_occupation(occupation)
                .unwrap_or("other")
                .into(),
            zip_code: f[4].into(),
        });
    }
    for (n, line) in lines(&read_latin1(dir.join("movies.dat"))?) {
        let f = fields(line, "::", 3, "movies.dat", n)?;
        data.movies.push(Movie {
            id: int(f[0], "movies.dat", n)?,
            title: f[1].into(),
            genres: f[2].into(),
            year: labels::title_year(f[1]),
        });
    }
    let ratings = dir.join("ratings.dat");
    if !ratings.exists() {
        bail!("{} is missing: this folder has users and movies only; ratings are needed to build histories", ratings.display());
    }
    for (n, line) in lines(&read_latin1(ratings)?) {
        let f = fields(line, "::", 4, "ratings.dat", n)?;
        data.ratings.push(Rating {
            user_id: int(f[0], "ratings.dat", n)?,
            movie_id: int(f[1], "ratings.dat", n)?,
            rating: int(f[2], "ratings.dat", n)?,
            ts: int(f[3], "ratings.dat", n)?,
        });
    }
    Ok(data)
}

fn read_ml100k(dir: &Path) -> Result<Dataset> {
    let mut data = Dataset::default();
    for (n, line) in lines(&read_latin1(dir.join("u.user"))?) {
        let f = fields(line, "|", 5, "u.user", n)?;
        data.users.push(User {
            id: int(f[0], "u.user", n)?,
            gender: labels::gender(f[2]),
            age: labels::age_range(int(f[1], "u.user", n)? as u32).into(),
            occupation: labels::ml100k_occupation(f[3]).into(),
            zip_code: f[4].into(),
        });
    }
    let mut genre_names = Vec::new();
    for (n, line) in lines(&read_latin1(dir.join("u.genre"))?) {
        let f = fields(line, "|", 2, "u.genre", n)?;
        genre_names.push((int(f[1], "u.genre", n)? as usize, f[0].to_string()));
    }
    genre_names.sort();
    for (n, line) in lines(&read_latin1(dir.join("u.item"))?) {
        let f = fields(line, "|", 5 + genre_names.len(), "u.item", n)?;
        let genres: Vec<&str> = genre_names
            .iter()
            .filter(|(i, _)| f[5 + i].trim() == "1")
            .map(|(_, name)| name.as_str())
            .collect();
        data.movies.push(Movie {
            id: int(f[0], "u.item", n)?,
            title: f[1].into(),
            genres: genres.join("|"),
            year: labels::title_year(f[1]),
        });
    }
    for (n, line) in lines(&read_latin1(dir.join("u.data"))?) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            bail!("u.data line {n}: expected 4 tab-separated fields");
        }
        data.ratings.push(Rating {
            user_id: int(f[0], "u.data", n)?,
            movie_id: int(f[1], "u.data", n)?,
            rating: int(f[2], "u.data", n)?,
            ts: int(f[3], "u.data", n)?,
        });
    }
    Ok(data)
}
