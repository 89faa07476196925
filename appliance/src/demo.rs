//! `vigil demo`: two built-in street cameras, the default model, the UI on
//! port 8080, no configuration file.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::DemoArgs;
use crate::config::Config;

/// Clips compiled into the binary (see assets/demo/README.md).
const CLIPS: [(&str, &[u8]); 2] = [
    ("street", include_bytes!("../assets/demo/street.mp4")),
    ("bikes", include_bytes!("../assets/demo/bikes.mp4")),
];

/// Analytics to show off on the street clip: a counting line across the
/// walkway (the one `docs/analytics.md` checks against a hand count).
const STREET_ANALYTICS: &str =
    "lines = [{ name = \"walkway\", from = [0.4, 0.25], to = [0.4, 0.75] }]\n";

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let data = args
        .data
        .unwrap_or_else(|| std::env::temp_dir().join("vigil-demo"));
    let clips = write_clips(&data.join("clips"))?;
    let text = demo_config(&args.listen, &data.join("db"), &args.model, &clips);
    let config = Config::parse(&text, Path::new("<demo>"))?;
    println!(
        "Vigil demo: open http://{} in a browser (Ctrl-C stops).\n\
         Log in as admin: the first start prints the password below; to set one, run\n  \
         vigil user add admin --data {}",
        args.listen,
        data.join("db").display()
    );
    crate::pipeline::run(config)
}

/// Writes each clip unless an identical file is already there.
pub(crate) fn write_clips(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    CLIPS
        .iter()
        .map(|(name, bytes)| {
            let path = dir.join(format!("{name}.mp4"));
            let same = std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64);
            if !same {
                std::fs::write(&path, bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok((name.to_string(), path))
        })
        .collect()
}

fn demo_config(listen: &str, db: &Path, model: &str, clips: &[(String, PathBuf)]) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut text = format!(
        "[server]\nlisten = {}\n\n[storage]\npath = {}\n\n[detector]\nmodel = {}\n",
        q(listen),
        q(&db.display().to_string()),
        q(model)
    );
    for (name, path) in clips {
        text.push_str(&format!(
            "\n[[cameras]]\nid = {}\nurl = {}\ndetect_fps = 5\n",
            q(name),
            q(&format!("file://{}?loop=1", path.display()))
        ));
        if name == "street" {
            text.push_str(STREET_ANALYTICS);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_valid_and_names_every_clip() {
        let clips = vec![
            ("street".to_string(), PathBuf::from("/tmp/d/street.mp4")),
            ("bikes".to_string(), PathBuf::from("/tmp/d/bikes.mp4")),
        ];
        let text = demo_config("127.0.0.1:8080", Path::new("/tmp/d/db"), "m", &clips);
        let c = Config::parse(&text, Path::new("<demo>")).unwrap();
        let ids: Vec<&str> = c.cameras.iter().map(|c| c.id.get_ref().as_str()).collect();
        assert_eq!(ids, vec!["street", "bikes"]);
        let street = c.cameras[0].scene(&c.detector);
        assert_eq!(street.lines[0].name, "walkway");
    }
}
