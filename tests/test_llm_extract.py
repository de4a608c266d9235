"""Taking candidate code out of LLM replies."""

from hyarch.agent.extract import NO_CODE, extract_code

MODEL = "import torch\n\nfrom hyarch import HybridModel\n\n\nclass Model(HybridModel):\n    pass\n"


def test_one_block():
    got = extract_code(f"Adding friction.\n\n```python\n{MODEL}```\nDone.")
    assert got.source == MODEL and got.reason is None


def test_the_block_defining_model_wins_over_a_usage_example():
    reply = f"```python\n{MODEL}```\nUse it so:\n```python\nm = Model(('theta',))\n```\n"
    assert extract_code(reply).source == MODEL


def test_the_last_model_block_wins():
    draft = MODEL.replace("pass", "x = 1")
    reply = f"First try:\n```python\n{draft}```\nBetter:\n```py\n{MODEL}```"
    assert extract_code(reply).source == MODEL


def test_chatty_reply_without_code_is_a_reason():
    got = extract_code("I think friction is missing; you should add a damping term.")
    assert got.source is None and got.reason == NO_CODE


def test_blocks_without_model_are_named_in_the_reason():
    got = extract_code("```python\nprint('hi')\n```")
    assert got.source is None and "do not define class Model" in got.reason


def test_other_languages_are_ignored():
    got = extract_code(f"```text\n{MODEL}```")
    assert got.source is None


def test_syntax_errors_are_kept_for_the_checks():
    broken = MODEL.replace("pass", "return {")
    assert extract_code(f"```python\n{broken}```").source == broken


def test_cut_off_reply_keeps_the_open_block():
    got = extract_code(f"```python\n{MODEL}    def derivatives(self, t, s, u):\n")
    assert got.source.startswith(MODEL)


def test_thinking_is_ignored():
    draft = MODEL.replace("pass", "draft = True")
    reply = f"<think>maybe\n```python\n{draft}```\n</think>\nFinal:\n```python\n{MODEL}```"
    assert extract_code(reply).source == MODEL
    assert extract_code(f"<think>```python\n{draft}```</think>ok").reason == NO_CODE


def test_unfenced_file_is_accepted():
    assert extract_code(MODEL).source == MODEL
    assert extract_code("class Model is what I would write").reason == NO_CODE


def test_indented_fence_and_empty_reply():
    indented = "  ```python\n  " + MODEL.replace("\n", "\n  ").rstrip() + "\n  ```"
    assert extract_code(indented).source == MODEL
    assert extract_code("").reason == "the reply was empty"


def test_extraction_is_linear_in_the_reply():
    # a million backticks, and thousands of unclosed fences: each took minutes with a
    # backtracking pattern; one pass over the lines takes well under a second
    import time

    t0 = time.perf_counter()
    assert extract_code("`" * 1_000_000).source is None
    assert extract_code("```python\nx = 1\n" * 50_000).source is None
    assert extract_code("<think>" * 100_000 + "```python\nclass Model:\n    pass\n```").source is None
    assert time.perf_counter() - t0 < 10.0


def test_longer_fence_holds_a_shorter_one():
    reply = "````python\nclass Model(HybridModel):\n    doc = \"```\"\n````\n"
    assert 'doc = "```"' in extract_code(reply).source
