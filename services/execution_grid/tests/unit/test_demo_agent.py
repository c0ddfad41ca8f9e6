from execution_grid.demo_agent import Directives, Step, read_directives

EPIC = """Our widgets need a catalogue.

- [ ] Describe a widget
- [ ] Store the catalogue in a file (after 1)
* [ ] List it on the command line (after 1, 2)
- [x] Already done, not a step
- [ ] Cannot wait for a later step (after 5)
"""


def test_steps_are_read_in_order_with_what_they_wait_for() -> None:
    assert read_directives(EPIC, trusted=True) == Directives(
        steps=(
            Step("Describe a widget"),
            Step("Store the catalogue in a file", after=(0,)),
            Step("List it on the command line", after=(0, 1)),
            Step("Cannot wait for a later step"),
        )
    )


def test_the_runaway_line_is_a_line_of_its_own() -> None:
    assert read_directives("Go fast.\n\ndemo-agent: runaway\n", trusted=True).runaway
    assert not read_directives("Please do not write demo-agent: runaway here", trusted=True).runaway


def test_an_untrusted_description_is_data_never_instructions() -> None:
    assert read_directives(EPIC + "\ndemo-agent: runaway\n", trusted=False) == Directives()
