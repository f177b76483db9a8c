"""The parser of the README's curl examples (tests/helpers/readme_examples.py), and that every curl
example of the project's own README is one the integration tests run as written."""

from __future__ import annotations

import re

from tests.helpers.readme_examples import README, README_ADDRESS, README_KEY, all_curl_examples

# (method, path pattern) -> the integration test that runs such README examples
RUN_BY = {
    ("GET", r"/|/health|/v1/models|/metrics"): "test_openai_api::test_readme_info_and_metrics_examples_work_as_written",
    ("POST", r"/v1/(chat/)?completions"): "test_openai_api::test_readme_curl_examples_work_as_written",
    ("POST", r"/v1/embeddings"): "test_embeddings_api::test_readme_embedding_examples_work_as_written",
    ("POST", r"/v1/responses"): "test_responses_api::test_readme_responses_examples_work_as_written",
    ("POST", r"/v1/training/ingest"): "test_training_api::test_readme_training_examples_work_as_written",
    ("GET", r"/v1/training/datasets(/[^/]+)?"): "test_training_api::test_readme_training_examples_work_as_written",
    ("DELETE", r"/v1/training/datasets/[^/]+"): "test_training_api::test_readme_training_examples_work_as_written",
}


def test_the_readme_is_the_repositorys_own():
    assert README.name == "README.md" and (README.parent / "server.py").is_file()


def test_every_readme_curl_example_is_run_by_a_test():
    examples = all_curl_examples()
    assert len(examples) >= 5
    for example in examples:
        assert README_ADDRESS in example.command, example.command  # the tests swap this address for their server's
        if "Authorization" in example.command:  # the tests' servers accept this key
            assert README_KEY in example.command, example.command
        runners = [test for (method, path), test in RUN_BY.items()
                   if method == example.method and re.fullmatch(path, example.path)]
        assert runners, f"no test runs the README example {example.method} {example.path}: {example.command}"


def test_training_read_back_and_delete_examples_name_the_ingested_dataset():
    """The training test reads back and deletes only the dataset that the README's ingest example made."""
    (ingest,) = [e for e in all_curl_examples() if e.path == "/v1/training/ingest"]
    for example in all_curl_examples():
        if example.path.startswith("/v1/training/datasets/"):
            assert example.path == f"/v1/training/datasets/{ingest.body['dataset']}", example.command


def test_commands_are_split_as_bash_would(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "text\n```bash\nmake run   # not curl\nKEY=sk-1   # a key\n\n# a comment\n"
        "curl -s http://127.0.0.1:8000/v1/x -H \"Authorization: Bearer $KEY\" \\\n"
        "  -d '{\"a\": 1,\n       \"stream\": true}'\n"
        "curl -s -X DELETE 'http://127.0.0.1:8000/v1/y/z?offset=2&limit=3'\n```\n"
        "```python\ncurl = 1\n```\n"
        "```bash\ncurl -sN http://127.0.0.1:8000/v1/w | jq\n```\n"
    )
    first, second, third = all_curl_examples(readme)
    assert first.command.startswith("KEY=sk-1   # a key\ncurl -s ") and first.command.endswith('"stream": true}\'')
    assert (first.method, first.path, first.body, first.stream) == ("POST", "/v1/x", {"a": 1, "stream": True}, True)
    assert (second.method, second.path, second.query) == ("DELETE", "/v1/y/z", {"offset": ["2"], "limit": ["3"]})
    assert second.body is None and not second.stream
    assert (third.command, third.method, third.path) == ("curl -sN http://127.0.0.1:8000/v1/w | jq", "GET", "/v1/w")
