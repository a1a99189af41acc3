"""Tool names: `{alias}__{action}`, `-` → `_`, 1 to 64 chars, unique, deterministic, stable."""

from __future__ import annotations

import random
import re

from treadle.mcp.naming import MAX_LENGTH, assign_names, natural_name

VALID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _assert_valid_and_unique(names: dict[tuple[str, str], str]) -> None:
    for pair, name in names.items():
        assert VALID.match(name), (pair, name)
    assert len(set(names.values())) == len(names)


def test_a_name_is_alias_and_action_joined_by_two_underscores_with_dashes_replaced() -> None:
    names = assign_names([("google-sheets", "append_row"), ("slack", "send_message")])

    assert names == {
        ("google-sheets", "append_row"): "google_sheets__append_row",
        ("slack", "send_message"): "slack__send_message",
    }


def test_an_action_name_with_dashes_and_dots_becomes_a_valid_name() -> None:
    assert natural_name("kit", "get.v2-beta") == "kit__get.v2_beta"
    names = assign_names([("kit", "get.v2-beta")])
    assert names[("kit", "get.v2-beta")] == "kit__get.v2_beta"


def test_aliases_that_differ_only_by_dash_and_underscore_get_different_names() -> None:
    names = assign_names([("my-bot", "send"), ("my_bot", "send")])

    _assert_valid_and_unique(names)
    # The alias spelt exactly like the name keeps it; the other gets a distinct form.
    assert names[("my_bot", "send")] == "my_bot__send"
    assert names[("my-bot", "send")] != "my_bot__send"
    assert names[("my-bot", "send")].startswith("my_bot__send_")


def test_two_dashed_aliases_that_normalise_alike_still_get_different_names() -> None:
    names = assign_names([("a-b_c", "run"), ("a_b-c", "run")])

    _assert_valid_and_unique(names)


def test_the_colliding_pair_gets_the_same_names_whatever_the_input_order() -> None:
    pairs = [("my-bot", "send"), ("my_bot", "send"), ("a-b_c", "run"), ("a_b-c", "run")]

    assert assign_names(pairs) == assign_names(list(reversed(pairs)))


def test_a_name_longer_than_64_characters_is_shortened_to_a_valid_name() -> None:
    alias = "a" * 60
    names = assign_names([(alias, "append_row"), ("short", "x")])

    long_name = names[(alias, "append_row")]
    assert len(long_name) <= MAX_LENGTH
    assert VALID.match(long_name)
    assert names[("short", "x")] == "short__x"


def test_a_name_of_exactly_64_characters_is_kept_whole() -> None:
    alias = "a" * (MAX_LENGTH - len("__run"))
    names = assign_names([(alias, "run")])

    assert names[(alias, "run")] == f"{alias}__run"
    assert len(names[(alias, "run")]) == MAX_LENGTH


def test_long_names_sharing_their_first_64_characters_stay_distinct() -> None:
    alias = "b" * 70
    pairs = [(alias, f"action_{i}") for i in range(20)]
    pairs.append((alias + "x", "action_0"))
    names = assign_names(pairs)

    _assert_valid_and_unique(names)
    assert all(len(name) <= MAX_LENGTH for name in names.values())


def test_shortened_names_are_deterministic_across_calls() -> None:
    pairs = [("c" * 80, "do_it"), ("my-bot", "send"), ("my_bot", "send")]

    first = assign_names(pairs)
    second = assign_names([("my_bot", "send"), ("c" * 80, "do_it"), ("my-bot", "send")])

    assert first == second


def test_a_shortened_name_never_takes_a_name_another_tool_spells_exactly() -> None:
    alias, action = "kit", "z" * 70
    shortened = assign_names([(alias, action)])[(alias, action)]
    # An exact pair whose natural name equals that shortened form: both must still differ.
    impostor_action = shortened[len(f"{alias}__") :]
    assert f"{alias}__{impostor_action}" == shortened

    names = assign_names([(alias, action), (alias, impostor_action)])

    _assert_valid_and_unique(names)
    assert names[(alias, impostor_action)] == shortened
    assert names[(alias, action)] != shortened


def test_duplicate_pairs_are_named_once() -> None:
    names = assign_names([("kit", "echo"), ("kit", "echo")])

    assert names == {("kit", "echo"): "kit__echo"}


def test_names_are_the_same_for_any_input_order() -> None:
    rng = random.Random(4)
    pairs = _random_pairs(rng, 60)
    expected = assign_names(pairs)

    for _ in range(10):
        shuffled = pairs[:]
        rng.shuffle(shuffled)
        assert assign_names(shuffled) == expected


def test_adding_an_unrelated_tool_never_renames_another() -> None:
    rng = random.Random(7)
    for _ in range(200):
        base = _random_pairs(rng, 12)
        before = assign_names(base)
        extra = _random_pairs(rng, 1)[0]
        # Unrelated: the new tool does not spell any existing tool's natural name.
        if natural_name(*extra) in {natural_name(*pair) for pair in base}:
            continue
        after = assign_names([*base, extra])

        _assert_valid_and_unique(after)
        assert {pair: after[pair] for pair in before} == before


def test_adding_a_dashed_twin_does_not_rename_the_exactly_spelt_tool() -> None:
    before = assign_names([("my_bot", "send"), ("other", "send")])
    after = assign_names([("my_bot", "send"), ("other", "send"), ("my-bot", "send")])

    assert after[("my_bot", "send")] == before[("my_bot", "send")] == "my_bot__send"
    assert after[("other", "send")] == before[("other", "send")]


def test_adding_a_long_tool_does_not_rename_other_long_tools() -> None:
    first = ("d" * 70, "one")
    before = assign_names([first])
    after = assign_names([first, ("d" * 70, "two"), ("d" * 71, "one")])

    assert after[first] == before[first]


def _random_pairs(rng: random.Random, count: int) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for _ in range(count):
        stem = rng.choice(["my", "team", "ops", "g" * rng.randint(40, 70)])
        sep = rng.choice(["-", "_", ""])
        alias = f"{stem}{sep}{rng.choice(['bot', 'sheets', 'x'])}"
        action = rng.choice(["send", "append_row", "get-item", "list", "a" * rng.randint(1, 30)])
        pairs.append((alias, action))
    return pairs


def test_a_chosen_name_wins_and_generated_names_avoid_it() -> None:
    pairs = [("kit", "echo"), ("kit", "crash"), ("test", "simple_text")]
    names = assign_names(pairs, {("kit", "echo"): "test__simple_text"})
    assert names[("kit", "echo")] == "test__simple_text"
    # the pair that would naturally spell that name gets a hashed one instead
    assert names[("test", "simple_text")] != "test__simple_text"
    assert len(set(names.values())) == len(pairs)
    assert names[("kit", "crash")] == "kit__crash"
