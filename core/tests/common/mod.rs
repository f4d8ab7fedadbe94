//! A MovieLens-shaped request shared by the core and extension tests.
#![allow(dead_code)]

use kvrec_core::Request;

pub const USER: &str = r#"{"gender":"female","age":"25-34","occupation":"programmer"}"#;

pub const HISTORY: &str = r#"[
  {"id":1,"title":"Toy Story (1995)","rating":5,"genres":"Animation|Children's|Comedy"},
  {"id":260,"title":"Star Wars: Episode IV - A New Hope (1977)","rating":4,"genres":"Action|Adventure|Fantasy|Sci-Fi"},
  {"id":1196,"title":"Empire Strikes Back, The (1980)","rating":4,"genres":["Action","Adventure","Drama","Sci-Fi","War"]},
  {"id":2028,"title":"Saving Private Ryan (1998)","rating":3,"genres":"Action|Drama|War"}
]"#;

pub const CANDIDATES: &str = r#"[
  {"id":1193,"title":"One Flew Over the Cuckoo's Nest (1975)"},
  {"id":661,"title":"James and the Giant Peach (1996)"},
  {"id":914,"title":"My Fair Lady (1964)"},
  {"id":3408,"title":"Erin Brockovich (2000)"},
  {"id":2355,"title":"Bug's Life, A (1998)"}
]"#;

pub fn request() -> Request {
    Request::from_json_texts(USER, HISTORY, CANDIDATES).expect("fixture request parses")
}
