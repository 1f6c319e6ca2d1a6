from hypothesis import given, settings, strategies as st

from regraft.hybrid.chunking import CharEstimate, chunk_text, count_tokens, load_tokenizer


class WordTok:
    """A real (if simple) tokenizer: one token per whitespace-separated word or punctuation mark."""

    is_estimate = False

    def encode(self, text):
        import re

        return list(range(len(re.findall(r"\w+|[^\w\s]", text))))


def test_chunks_respect_budget_and_are_exact_substrings():
    text = ("Sentence number one is here. " * 30) + "\n\n" + ("word " * 200) + "x" * 300
    tok = WordTok()
    chunks = chunk_text(text, tok, max_tokens=20)
    assert len(chunks) > 10
    for c in chunks:
        assert c.n_tokens <= 20
        assert c.n_tokens == count_tokens(tok, c.text)
        assert text[c.start:c.end] == c.text
        assert not c.estimate
    # nothing but whitespace is lost
    covered = "".join(c.text for c in chunks).replace(" ", "").replace("\n", "")
    assert covered == text.replace(" ", "").replace("\n", "")


def test_sentences_are_kept_whole_when_they_fit():
    text = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota."
    chunks = chunk_text(text, WordTok(), max_tokens=8)
    assert [c.text for c in chunks] == ["Alpha beta gamma. Delta epsilon zeta.", "Eta theta iota."]


def test_char_estimate_is_labelled():
    chunks = chunk_text("abcd " * 100, None, max_tokens=16)
    assert chunks and all(c.estimate for c in chunks)
    assert all(c.n_tokens <= 16 for c in chunks)
    assert CharEstimate().encode("abcdefgh") == [0, 0]


def test_real_tokenizer_json(tmp_path):
    from tests.hybrid.tiny import build_tokenizer

    build_tokenizer(tmp_path)
    tok = load_tokenizer(tmp_path)
    assert tok is not None and not tok.is_estimate
    text = "The capital of France is Paris. " * 40
    chunks = chunk_text(text, tok, max_tokens=25)
    assert all(0 < c.n_tokens <= 25 for c in chunks)
    assert sum(c.n_tokens for c in chunks) >= count_tokens(tok, text) - len(chunks)  # only boundary merges differ
    assert load_tokenizer(tmp_path / "nope") is None


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400), st.integers(1, 40))
def test_property_budget_and_offsets(text, budget):
    tok = WordTok()
    for c in chunk_text(text, tok, max_tokens=budget):
        assert text[c.start:c.end] == c.text
        assert count_tokens(tok, c.text) <= budget
        assert c.text.strip()
