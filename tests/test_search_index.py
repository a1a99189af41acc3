"""The lexical tool index: name-aware words, and updates that touch only what changed."""

from __future__ import annotations

from treadle.catalog import load_catalog
from treadle.mcp.discovery import ToolSearch
from treadle.mcp.search_index import LexicalIndex, tokens
from treadle.mcp.toolset import build_toolset
from treadle.store.records import ConnectionStrategy, WorkspaceIntegration

CATALOG = load_catalog()


def configured(
    integration: str, alias: str, allowed: tuple[str, ...] | None = None
) -> WorkspaceIntegration:
    return WorkspaceIntegration(
        id=f"wi_{alias}",
        org_id="org_1",
        workspace_id="ws_1",
        integration_name=integration,
        alias=alias,
        connection_strategy=ConnectionStrategy.FIXED,
        connection_id=None,
        allowed_actions=allowed,
        settings={},
        created_at="2026-12-02T00:00:00Z",
        updated_at="2026-12-02T00:00:00Z",
    )


def names(search: ToolSearch, query: str, limit: int = 5) -> list[str]:
    return [hit.entry.name for hit in search.search(query, limit)[0]]


def test_tool_names_split_into_the_words_a_task_uses() -> None:
    assert tokens("google_sheets__append_row") == ("google", "sheet", "add", "row")
    assert set(tokens("appendRow")) == {"add", "row"}
    assert set(tokens("append a row to a google sheet")) == {"add", "row", "google", "sheet"}
    assert tokens("listChannels") == tokens("list channels")
    assert tokens("Remove the repositories") == ("delete", "repo")


def test_a_task_finds_its_tool_among_aliases() -> None:
    workspace = [
        configured("google-sheets", "budget"),
        configured("google-sheets", "hiring"),
        configured("slack", "design"),
        configured("github", "acme"),
    ]
    index = LexicalIndex()
    index.sync(build_toolset(CATALOG, None, workspace, []))
    search = ToolSearch(index, None)
    assert names(search, "append a row to the budget google sheet")[0] == "budget__append_row"
    assert names(search, "post a message in the design channel")[0] == (
        "design__send_channel_message"
    )
    assert names(search, "open an issue in acme")[0] == "acme__create_issue"
    # a parameter's name finds the tools that take it
    assert "acme__create_pull_request" in names(search, "head base", 3)
    assert names(search, "zzz unknown words") == []


def test_a_new_alias_indexes_only_its_tools_and_a_removed_one_leaves() -> None:
    workspace = [configured("slack", f"team{i}") for i in range(30)]
    index = LexicalIndex()
    index.sync(build_toolset(CATALOG, None, workspace, []))
    assert len(index) == 30 * 7
    before = index.updates
    index.sync(build_toolset(CATALOG, None, [*workspace, configured("gmail", "mail")], []))
    assert index.updates - before == 5  # gmail's five actions, nothing else
    assert names(ToolSearch(index, None), "send an email")[0] == "mail__send_email"

    before = index.updates
    narrowed = [*workspace[:-1], configured("slack", "team29", ("list_users",))]
    index.sync(build_toolset(CATALOG, None, narrowed, []))
    assert index.updates == before
    assert len(index) == 29 * 7 + 1
    assert "team29__send_channel_message" not in names(ToolSearch(index, None), "team29", 50)
    assert index.doc_id("mail__send_email") is None


def test_a_search_can_be_limited_to_an_alias_or_an_integration() -> None:
    workspace = [
        configured("slack", "design"),
        configured("slack", "sales"),
        configured("gmail", "mail"),
    ]
    index = LexicalIndex()
    index.sync(build_toolset(CATALOG, None, workspace, []))
    search = ToolSearch(index, None)
    assert {
        n.split("__")[0] for n in [h.entry.name for h in search.search("send", 50, "sales")[0]]
    } == {"sales"}
    assert {h.entry.alias for h in search.search("send", 50, "SLACK")[0]} == {"design", "sales"}


def test_semantic_ranking_with_the_extra_finds_tools_by_meaning() -> None:
    """The bundled all-MiniLM-L6-v2 (CI installs the extra): paraphrases are close, and
    hybrid ranking still tells aliases apart by their words."""
    import pytest

    from treadle.mcp import semantic

    encoder = semantic.encoder()
    if encoder is None:
        pytest.skip("the semantic extra is not installed")
    close, near, far = encoder.encode(
        ["send a chat message", "post a message to a channel", "delete a spreadsheet"]
    )
    assert float(close @ near) > float(close @ far) + 0.2
    workspace = [
        configured("slack", "design"),
        configured("slack", "sales"),
        configured("gmail", "mail"),
    ]
    index = LexicalIndex()
    index.sync(build_toolset(CATALOG, None, workspace, []))
    vectors = semantic.VectorIndex(encoder)
    vectors.sync(dict(index.meanings), index.source)
    search = ToolSearch(index, vectors)
    meaning = [
        h.entry.name
        for h in search.search("write to my colleagues in a channel", 2, ranking="semantic")[0]
    ]
    assert {name.split("__")[1] for name in meaning} == {"send_channel_message"}
    hybrid = search.search("write to the sales colleagues in a channel", 1, ranking="hybrid")[0]
    assert hybrid[0].entry.name == "sales__send_channel_message"
