//! Proactive negotiation of the manifest response format over `Accept` (RFC 9110 §12.5.1).

/// The response shapes a manifest can be served in, in server preference order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    Multipart,
    ExpoJson,
    Json,
}

impl ManifestFormat {
    const PREFERENCE: [ManifestFormat; 3] = [
        ManifestFormat::Multipart,
        ManifestFormat::ExpoJson,
        ManifestFormat::Json,
    ];

    fn media_type(self) -> (&'static str, &'static str) {
        match self {
            ManifestFormat::Multipart => ("multipart", "mixed"),
            ManifestFormat::ExpoJson => ("application", "expo+json"),
            ManifestFormat::Json => ("application", "json"),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ManifestFormat::Multipart => "multipart/mixed",
            ManifestFormat::ExpoJson => "application/expo+json",
            ManifestFormat::Json => "application/json",
        }
    }
}

/// What both clients send, byte for byte.
const CLIENT_ACCEPT: &str = "multipart/mixed,application/expo+json,application/json";

/// Ranks the acceptable formats, best first. An absent header accepts anything. The most
/// specific matching range decides each format's quality; ties keep server preference.
pub fn negotiate(accept: Option<&str>) -> Vec<ManifestFormat> {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty() && *a != CLIENT_ACCEPT) else {
        return ManifestFormat::PREFERENCE.to_vec();
    };
    let ranges: Vec<(&str, &str, f32)> = accept.split(',').filter_map(parse_range).collect();
    let mut ranked: Vec<(ManifestFormat, f32)> = ManifestFormat::PREFERENCE
        .iter()
        .filter_map(|&format| {
            let (ty, sub) = format.media_type();
            let best = ranges
                .iter()
                .filter_map(|&(rt, rs, q)| {
                    let specificity = if rt.eq_ignore_ascii_case(ty) && rs.eq_ignore_ascii_case(sub) {
                        2
                    } else if rt.eq_ignore_ascii_case(ty) && rs == "*" {
                        1
                    } else if rt == "*" && rs == "*" {
                        0
                    } else {
                        return None;
                    };
                    Some((specificity, q))
                })
                .max_by_key(|(specificity, _)| *specificity)?;
            (best.1 > 0.0).then_some((format, best.1))
        })
        .collect();
    // Stable sort keeps the server's preference among equal qualities.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.into_iter().map(|(f, _)| f).collect()
}

fn parse_range(range: &str) -> Option<(&str, &str, f32)> {
    let mut params = range.split(';');
    let media = params.next()?.trim();
    let (ty, sub) = media.split_once('/')?;
    let (ty, sub) = (ty.trim(), sub.trim());
    if ty.is_empty() || sub.is_empty() {
        return None;
    }
    let mut q = 1.0f32;
    for param in params {
        if let Some((k, v)) = param.split_once('=')
            && k.trim().eq_ignore_ascii_case("q")
        {
            q = v.trim().parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q))?;
        }
    }
    Some((ty, sub, q))
}

#[cfg(test)]
mod tests {
    use super::ManifestFormat::*;
    use super::*;

    #[test]
    fn what_the_client_sends_gets_multipart() {
        assert_eq!(
            negotiate(Some("multipart/mixed,application/expo+json,application/json"))[0],
            Multipart
        );
        assert_eq!(negotiate(None)[0], Multipart);
        assert_eq!(negotiate(Some("*/*"))[0], Multipart);
    }

    #[test]
    fn q_values_are_honoured() {
        assert_eq!(negotiate(Some("application/json")), vec![Json]);
        assert_eq!(negotiate(Some("application/expo+json")), vec![ExpoJson]);
        assert_eq!(
            negotiate(Some("multipart/mixed;q=0.5, application/json")),
            vec![Json, Multipart]
        );
        assert_eq!(
            negotiate(Some("*/*;q=0.1, application/expo+json;q=0.9")),
            vec![ExpoJson, Multipart, Json]
        );
        assert_eq!(negotiate(Some("multipart/*;q=0, */*")), vec![ExpoJson, Json]);
        assert_eq!(negotiate(Some("application/*")), vec![ExpoJson, Json]);
    }

    #[test]
    fn upper_case_media_types_match() {
        assert_eq!(negotiate(Some("APPLICATION/JSON")), vec![Json]);
    }

    #[test]
    fn nothing_acceptable() {
        assert!(negotiate(Some("text/html")).is_empty());
        assert!(negotiate(Some("application/json;q=0")).is_empty());
        assert!(negotiate(Some("garbage")).is_empty());
    }
}
