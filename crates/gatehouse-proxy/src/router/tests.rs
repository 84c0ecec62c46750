use super::*;

fn spec(paths: &[&str]) -> RouteSpec {
    RouteSpec {
        paths: paths.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn find(r: &Router, host: &str, method: &str, path: &str) -> Option<Match> {
    r.find(
        host,
        &Method::from_bytes(method.as_bytes()).unwrap(),
        path,
        &HeaderMap::new(),
    )
}

fn route(r: &Router, path: &str) -> Option<usize> {
    find(r, "example.com", "GET", path).map(|m| m.route)
}

#[test]
fn prefix_is_segment_wise_and_longest_wins() {
    let r = Router::new(&[spec(&["/"]), spec(&["/api"]), spec(&["/api/v1"])]).unwrap();
    assert_eq!(route(&r, "/"), Some(0));
    assert_eq!(route(&r, "/apix"), Some(0));
    assert_eq!(route(&r, "/api"), Some(1));
    assert_eq!(route(&r, "/api/"), Some(1));
    assert_eq!(route(&r, "/api/v2/x"), Some(1));
    assert_eq!(route(&r, "/api/v1/x"), Some(2));
    let m = find(&r, "h", "GET", "/api/v1/x").unwrap();
    assert_eq!(m.matched_len, "/api/v1".len());
}

#[test]
fn exact_beats_prefix_beats_regex() {
    let r = Router::new(&[spec(&["~/a/\\d+"]), spec(&["/a"]), spec(&["=/a/1"])]).unwrap();
    assert_eq!(route(&r, "/a/1"), Some(2));
    assert_eq!(route(&r, "/a/2"), Some(1));
    let r = Router::new(&[spec(&["~/a/\\d+"]), spec(&["/b"])]).unwrap();
    assert_eq!(route(&r, "/a/22"), Some(0));
    assert_eq!(route(&r, "/a/x"), None);
}

#[test]
fn priority_overrides_class() {
    let mut rx = spec(&["~/a/\\d+"]);
    rx.priority = 5;
    let r = Router::new(&[spec(&["/"]), rx]).unwrap();
    assert_eq!(route(&r, "/a/1"), Some(1));
    assert_eq!(route(&r, "/a/x"), Some(0));
}

#[test]
fn regex_priority_orders_regex_paths_only() {
    let mut high = spec(&["~/items/\\d+"]);
    high.regex_priority = 10;
    let low = spec(&["~/items/.*"]);
    // Declaration order alone would pick the first; regex_priority picks `high`.
    let r = Router::new(&[low.clone(), high.clone()]).unwrap();
    assert_eq!(route(&r, "/items/7"), Some(1));
    assert_eq!(route(&r, "/items/x"), Some(0));
    // It does not lift a regex above a prefix path (Gatehouse's precedence: prefix first).
    let r = Router::new(&[high, spec(&["/items"])]).unwrap();
    assert_eq!(route(&r, "/items/7"), Some(1));
}

#[test]
fn params_are_captured_and_literals_win() {
    let r = Router::new(&[spec(&["/users/{id}/orders"]), spec(&["/users/me/orders"])]).unwrap();
    let m = find(&r, "h", "GET", "/users/42/orders/7").unwrap();
    assert_eq!(m.route, 0);
    assert_eq!(m.params, vec![("id".to_string(), "42".to_string())]);
    assert_eq!(m.matched_len, "/users/42/orders".len());
    assert_eq!(route(&r, "/users/me/orders"), Some(1));
    assert_eq!(route(&r, "/users/orders"), None);
}

#[test]
fn regex_named_groups_and_floating_regex() {
    let r = Router::new(&[spec(&["~/items/(?P<id>\\d+)$"]), spec(&["~.*\\.php$"])]).unwrap();
    let m = find(&r, "h", "GET", "/items/12").unwrap();
    assert_eq!((m.route, m.params[0].1.as_str()), (0, "12"));
    assert_eq!(route(&r, "/items/12/x"), None);
    assert_eq!(route(&r, "/x/y.php"), Some(1));
}

#[test]
fn regex_with_optional_slash_is_not_missed() {
    let r = Router::new(&[spec(&["~/a/*b"]), spec(&["~/c/?$"])]).unwrap();
    assert_eq!(route(&r, "/ab"), Some(0));
    assert_eq!(route(&r, "/c"), Some(1));
}

#[test]
fn hosts_exact_wildcard_any() {
    let mut exact = spec(&["/"]);
    exact.hosts = vec!["api.example.com".into()];
    let mut wild = spec(&["/"]);
    wild.hosts = vec!["*.example.com".into()];
    let mut deeper = spec(&["/"]);
    deeper.hosts = vec!["*.eu.example.com".into()];
    let r = Router::new(&[spec(&["/"]), wild, exact, deeper]).unwrap();
    let h = |host| find(&r, host, "GET", "/x").map(|m| m.route);
    assert_eq!(h("api.example.com"), Some(2));
    assert_eq!(h("API.Example.COM:8080"), Some(2));
    assert_eq!(h("www.example.com"), Some(1));
    assert_eq!(h("a.eu.example.com"), Some(3));
    assert_eq!(h("example.com"), Some(0));
    assert_eq!(h("other.org"), Some(0));
}

#[test]
fn host_beats_longer_path_without_host() {
    let mut with_host = spec(&["/"]);
    with_host.hosts = vec!["a.com".into()];
    let r = Router::new(&[spec(&["/deep/path"]), with_host]).unwrap();
    assert_eq!(find(&r, "a.com", "GET", "/deep/path").unwrap().route, 1);
}

#[test]
fn methods_and_headers() {
    let mut get = spec(&["/m"]);
    get.methods = vec!["GET".into()];
    let mut v2 = spec(&["/m"]);
    v2.headers = vec![("x-version".into(), vec!["2".into(), "~^3\\.".into()])];
    let r = Router::new(&[spec(&["/m"]), get, v2]).unwrap();
    assert_eq!(find(&r, "h", "POST", "/m").unwrap().route, 0);
    assert_eq!(find(&r, "h", "GET", "/m").unwrap().route, 1);
    let mut hm = HeaderMap::new();
    hm.insert("x-version", "3.1".parse().unwrap());
    assert_eq!(r.find("h", &Method::POST, "/m", &hm).unwrap().route, 2);
    hm.insert("x-version", "4".parse().unwrap());
    assert_eq!(r.find("h", &Method::POST, "/m", &hm).unwrap().route, 0);
}

#[test]
fn declaration_order_breaks_ties() {
    let r = Router::new(&[spec(&["/same"]), spec(&["/same"])]).unwrap();
    assert_eq!(route(&r, "/same"), Some(0));
}

#[test]
fn route_without_path_matches_everything_on_its_host() {
    let m = RouteSpec {
        methods: vec!["DELETE".into()],
        ..Default::default()
    };
    let r = Router::new(&[m]).unwrap();
    assert_eq!(find(&r, "h", "DELETE", "/any/thing").unwrap().route, 0);
    assert!(find(&r, "h", "GET", "/any").is_none());
}

#[test]
fn deep_paths_beyond_the_stack_buffer() {
    let deep: String = (0..40).map(|i| format!("/s{i}")).collect();
    let r = Router::new(&[spec(&[&deep]), spec(&["/s0"])]).unwrap();
    assert_eq!(route(&r, &format!("{deep}/tail")), Some(0));
}
