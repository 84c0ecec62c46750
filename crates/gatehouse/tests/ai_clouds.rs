//! The AI gateway in front of Gemini (API key), Gemini on Vertex AI (a service account key
//! file exchanged for tokens) and Bedrock Converse (SigV4 with temporary credentials, and
//! a Bedrock API key): the official `openai` and `anthropic` Python SDKs against the real
//! binary, with a mock provider that checks each cloud's authentication and rules (SigV4
//! over the bytes received, thought signatures sent back, `toolConfig` with tool history).

mod common;

use common::*;
use gatehouse_testkit::llm::cloud::{AWS_KEY_ID, AWS_SECRET, SIGNATURE};
use gatehouse_testkit::llm::MockLlm;
use serde_json::{json, Value};

/// A service account key file (a fresh RSA key, made with `openssl`) whose token endpoint
/// is the mock's; the mock learns the public key.
fn service_account(mock: &MockLlm, dir: &std::path::Path) -> std::path::PathBuf {
    let key = dir.join("sa.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey");
    let public = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    mock.expect_google_key(&String::from_utf8_lossy(&public.stdout));
    let file = dir.join("sa.json");
    let sa = json!({"type": "service_account", "project_id": "proj", "private_key_id": "kid-1",
        "private_key": std::fs::read_to_string(&key).unwrap(),
        "client_email": "gatehouse@proj.iam.gserviceaccount.com",
        "token_uri": format!("http://{}/token", mock.addr)});
    std::fs::write(&file, sa.to_string()).unwrap();
    file
}

fn config(mock: &MockLlm, sa: &std::path::Path) -> String {
    format!(
        r#"_format_version: "1"
ai_providers:
  - name: gem
    kind: gemini
    base_url: http://{addr}/v1beta
    keys: [{{key: AIza-mock-key}}]
  - name: vertex
    kind: vertex-gemini
    base_url: http://{addr}/v1/projects/proj/locations/us-central1/publishers/google
    keys: [{{key: "{{file://{sa}}}"}}]
  - name: aws
    kind: bedrock
    region: us-east-1
    base_url: http://{addr}
    keys: [{{key: "{AWS_KEY_ID}:{AWS_SECRET}:session-token-1"}}]
  - name: aws-apikey
    kind: bedrock
    region: eu-west-1
    base_url: http://{addr}
    keys: [{{key: ABSK-mock-api-key}}]
  - name: aws-wrong
    kind: bedrock
    region: us-east-1
    base_url: http://{addr}
    keys: [{{key: "{AWS_KEY_ID}:not-the-secret"}}]
ai_models:
  - name: gemini
    targets: [{{provider: gem, model: gemini-2.5-flash}}]
  - name: vertex
    targets: [{{provider: vertex, model: gemini-2.5-pro}}]
  - name: claude-bedrock
    targets: [{{provider: aws, model: "anthropic.claude-3-5-haiku-20241022-v1:0"}}]
  - name: nova
    targets: [{{provider: aws-apikey, model: amazon.nova-lite-v1:0}}]
  - name: bedrock-then-gemini
    targets:
      - {{provider: aws, model: m-429, priority: 0}}
      - {{provider: gem, model: gemini-2.5-flash, priority: 1}}
  - name: unsigned
    targets: [{{provider: aws-wrong, model: amazon.nova-lite-v1:0}}]
  - name: bedrock-broken
    targets: [{{provider: aws, model: m-break}}]
services:
  - name: ai
    url: http://127.0.0.1:9
    routes:
      - name: ai
        paths: [/ai]
        plugins:
          - name: ai-proxy
            config: {{usage_headers: true}}
"#,
        addr = mock.addr,
        sa = sa.display(),
    )
}

const OPENAI_SDK: &str = r#"
import json, sys, openai
c = openai.OpenAI(base_url=sys.argv[1], api_key="anything", max_retries=0)
out = {}
tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
for model in ["gemini", "vertex", "claude-bedrock", "nova"]:
    r = c.chat.completions.create(model=model, messages=[
        {"role": "system", "content": "be kind"}, {"role": "user", "content": "hello world"}])
    o = {"text": r.choices[0].message.content, "finish": r.choices[0].finish_reason,
         "usage": [r.usage.prompt_tokens, r.usage.completion_tokens]}
    for include in [False, True]:
        kw = {"stream_options": {"include_usage": True}} if include else {}
        chunks = list(c.chat.completions.create(model=model, stream=True,
            messages=[{"role": "user", "content": "hello there"}], **kw))
        o[f"stream-{include}"] = {
            "text": "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices),
            "usage": [ch.usage.completion_tokens for ch in chunks if ch.usage],
            "finish": [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]}
    r = c.chat.completions.create(model=model, tools=tools, tool_choice="auto",
        messages=[{"role": "user", "content": "what is the weather?"}])
    msg = r.choices[0].message
    call = msg.tool_calls[0]
    o["tool"] = {"name": call.function.name, "args": json.loads(call.function.arguments),
        "finish": r.choices[0].finish_reason,
        "signature": (msg.model_dump().get("tool_calls")[0].get("extra_content") or {}).get("google", {}).get("thought_signature")}
    # The assistant message goes back as the SDK returned it, with the tool's result.
    r = c.chat.completions.create(model=model, tools=tools, messages=[
        {"role": "user", "content": "what is the weather?"},
        msg.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    o["tool-result"] = r.choices[0].message.content
    args, names = {}, []
    for ch in c.chat.completions.create(model=model, tools=tools, stream=True,
            messages=[{"role": "user", "content": "what is the weather?"}]):
        for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            if tc.function and tc.function.name: names.append(tc.function.name)
            if tc.function and tc.function.arguments: args[tc.index] = args.get(tc.index, "") + tc.function.arguments
    o["tool-stream"] = {"names": names, "args": json.loads(args[0])}
    r = c.chat.completions.create(model=model, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": [{"type": "text", "text": "describe"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    o["json-image"] = r.choices[0].message.content
    out[model] = o
e = c.embeddings.create(model="gemini", input=["one two", "three"])
out["embeddings"] = {"n": len(e.data), "dims": len(e.data[0].embedding), "tokens": e.usage.prompt_tokens}
r = c.chat.completions.create(model="bedrock-then-gemini", messages=[{"role": "user", "content": "fall back"}])
out["fallback"] = r.choices[0].message.content
try:
    c.chat.completions.create(model="unsigned", messages=[{"role": "user", "content": "x"}])
    out["unsigned"] = "no error"
except openai.APIStatusError as e:
    out["unsigned"] = {"status": e.status_code, "message": e.message}
try:
    list(c.chat.completions.create(model="bedrock-broken", stream=True, messages=[{"role": "user", "content": "a b c d"}]))
    out["broken"] = "no error"
except openai.APIError as e:
    out["broken"] = str(e)
try:
    c.chat.completions.create(model="claude-bedrock", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
except openai.BadRequestError as e:
    out["image-url"] = {"status": e.status_code, "param": e.param}
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_reaches_gemini_vertex_and_bedrock() {
    let mock = MockLlm::start();
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account(&mock, dir.path());
    let gw = start_with_config(dir.path(), &config(&mock, &sa), &[]);
    let out = python(OPENAI_SDK, &[&format!("http://{}/ai/v1", gw.proxy)]);
    for model in ["gemini", "vertex", "claude-bedrock", "nova"] {
        let o = &out[model];
        assert_eq!(o["text"], "echo: hello world", "{model}: {o}");
        assert_eq!(o["finish"], "stop", "{model}");
        assert_eq!(
            o["usage"],
            json!([4, 3]),
            "{model}: prompt and completion from the provider"
        );
        for include in ["False", "True"] {
            let s = &o[format!("stream-{include}")];
            assert_eq!(s["text"], "echo: hello there", "{model} {s}");
            assert_eq!(s["finish"], json!(["stop"]), "{model} {s}");
            let want = if include == "True" {
                json!([3])
            } else {
                json!([])
            };
            assert_eq!(s["usage"], want, "{model} include_usage={include}: {s}");
        }
        assert_eq!(o["tool"]["name"], "get_weather", "{model}");
        assert_eq!(o["tool"]["args"], json!({"city": "Paris"}), "{model}");
        assert_eq!(o["tool"]["finish"], "tool_calls", "{model}");
        let gemini = model == "gemini" || model == "vertex";
        assert_eq!(
            o["tool"]["signature"],
            if gemini {
                json!(SIGNATURE)
            } else {
                Value::Null
            },
            "{model}: the thought signature reaches the client"
        );
        // Sent back without its signature, the mock (like Gemini 3) would refuse with 400.
        assert!(
            o["tool-result"].as_str().unwrap().contains("sunny"),
            "{model}: {o}"
        );
        assert_eq!(
            o["tool-stream"],
            json!({"names": ["get_weather"], "args": {"city": "Paris"}}),
            "{model}"
        );
        assert_eq!(o["json-image"], "echo: describe", "{model}");
    }
    // Gemini reports no usage for embeddings: the gateway's count, in the answer too.
    assert_eq!(out["embeddings"], json!({"n": 2, "dims": 3, "tokens": 3}));
    assert_eq!(
        out["fallback"], "echo: fall back",
        "a throttled Bedrock falls back to Gemini"
    );
    assert_eq!(out["unsigned"]["status"], 502, "{out}");
    assert!(
        out["unsigned"]["message"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "the provider's words reach the client: {out}"
    );
    assert!(out["broken"].as_str().unwrap().contains("broke"), "{out}");
    assert_eq!(
        out["image-url"],
        json!({"status": 400, "param": "messages[0].content[0].image_url.url"})
    );

    let seen = mock.requests();
    // Gemini API: the key in its header, the model in the path, streams as SSE.
    let g = seen
        .iter()
        .find(|s| s.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent")
        .expect("a Gemini stream");
    assert_eq!(g.headers["x-goog-api-key"], "AIza-mock-key");
    assert!(g.headers.get("authorization").is_none());
    assert_eq!(
        g.body["systemInstruction"],
        Value::Null,
        "no system in this request"
    );
    let sys = seen
        .iter()
        .find(|s| {
            s.path.ends_with("gemini-2.5-flash:generateContent")
                && s.body.get("systemInstruction").is_some()
        })
        .unwrap();
    assert_eq!(sys.body["systemInstruction"]["parts"][0]["text"], "be kind");
    // Vertex: one token for every call, exchanged once for the key file.
    let v: Vec<_> = seen
        .iter()
        .filter(|s| s.path.contains("/publishers/google/models/gemini-2.5-pro"))
        .collect();
    assert!(v.len() >= 6);
    assert_eq!(mock.issued_tokens(), vec!["ya29.mock-1".to_string()]);
    assert!(v
        .iter()
        .all(|s| s.headers["authorization"] == "Bearer ya29.mock-1"));
    // Bedrock: SigV4 (checked by the mock over what it received) with the session token,
    // the model id's `:` encoded in the path.
    let b = seen
        .iter()
        .find(|s| s.path == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream")
        .expect("a Bedrock stream");
    let auth = b.headers["authorization"].to_str().unwrap();
    assert!(
        auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/"))
            && auth.contains("/us-east-1/bedrock/aws4_request"),
        "{auth}"
    );
    assert_eq!(b.headers["x-amz-security-token"], "session-token-1");
    let api_key = seen
        .iter()
        .find(|s| s.path.starts_with("/model/amazon.nova-lite-v1%3A0/"))
        .unwrap();
    assert_eq!(api_key.headers["authorization"], "Bearer ABSK-mock-api-key");
    // Nothing secret reaches the log.
    let log = gw.log_text();
    for secret in [
        AWS_SECRET,
        "session-token-1",
        "ABSK-mock-api-key",
        "AIza-mock-key",
        "ya29.mock-1",
        "BEGIN PRIVATE KEY",
    ] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

const ANTHROPIC_SDK: &str = r#"
import json, sys, anthropic
c = anthropic.Anthropic(base_url=sys.argv[1], api_key="anything", max_retries=0)
out = {}
tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
for model in ["gemini", "claude-bedrock"]:
    m = c.messages.create(model=model, max_tokens=100, system="be kind",
        messages=[{"role": "user", "content": "hi from anthropic"}])
    o = {"plain": {"text": m.content[0].text, "stop": m.stop_reason, "out": m.usage.output_tokens}}
    with c.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": "stream me"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    o["stream"] = {"text": text, "stop": final.stop_reason, "out": final.usage.output_tokens}
    with c.messages.stream(model=model, max_tokens=100, tools=tools,
            messages=[{"role": "user", "content": "weather please"}]) as s:
        final = s.get_final_message()
    use = [b for b in final.content if b.type == "tool_use"][0]
    o["tool"] = {"name": use.name, "input": use.input, "stop": final.stop_reason}
    out[model] = o
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_reaches_gemini_and_bedrock() {
    let mock = MockLlm::start();
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account(&mock, dir.path());
    let gw = start_with_config(dir.path(), &config(&mock, &sa), &[]);
    let out = python(ANTHROPIC_SDK, &[&format!("http://{}/ai", gw.proxy)]);
    for model in ["gemini", "claude-bedrock"] {
        let o = &out[model];
        assert_eq!(
            o["plain"],
            json!({"text": "echo: hi from anthropic", "stop": "end_turn", "out": 4}),
            "{model}"
        );
        assert_eq!(
            o["stream"],
            json!({"text": "echo: stream me", "stop": "end_turn", "out": 3}),
            "{model}"
        );
        assert_eq!(
            o["tool"],
            json!({"name": "get_weather", "input": {"city": "Paris"}, "stop": "tool_use"}),
            "{model}"
        );
    }
    let b = mock
        .requests()
        .into_iter()
        .find(|s| s.path.ends_with("/converse") && s.body.get("system").is_some())
        .unwrap();
    assert_eq!(b.body["system"][0]["text"], "be kind");
    assert_eq!(b.body["inferenceConfig"]["maxTokens"], 100);
}
