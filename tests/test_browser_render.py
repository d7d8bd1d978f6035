"""Highlighted code and typeset math in replies, in a real browser under the page's CSP.

highlight.js and KaTeX turn model output into markup: these tests check that it shows as meant,
that the code toolbar still copies plain text, and that hostile input in a fence or a formula stays
text. Every test fails on a CSP violation or a console error, which a blocked style or font would be.
"""

import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.fixtures.browser import shot
from tests.fixtures.chat_page import Chat
from tests.websocket_client import offline

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Every refusal under the page's CSP, recorded before any of the page's own scripts run.
RECORD_CSP_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""

CODE = '''def greet(name: str) -> str:
    """Say hello."""
    return f"Hello, {name}!"  # 42 < 43 & "quotes"
'''

RICH = f"""Inline math $e^{{i\\pi}} + 1 = 0$ and \\(a^2 + b^2 = c^2\\), but $5 and $10 stay prices.

$$
\\int_0^1 x^2\\,dx = \\frac{{1}}{{3}}
$$

\\[
\\sum_{{k=1}}^{{n}} k = \\frac{{n(n+1)}}{{2}}
\\]

```python
{CODE}```
"""


class RenderChat(Chat):
    """A chat tab that also records console errors and CSP violations."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.console_errors: list[str] = []
        self.page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda error: self.console_errors.append(str(error)))

    def csp_violations(self) -> list[str]:
        return self.page.evaluate("window.cspViolations")

    def assert_clean(self) -> None:
        assert self.csp_violations() == []
        assert self.console_errors == []
        assert self.dialogs == []


@pytest.fixture
def open_chat(
    new_context: Callable[..., BrowserContext], live_server_url: str, bob, offline_model
) -> Iterator[Callable[..., RenderChat]]:
    def open_page(**options: object) -> RenderChat:
        context = new_context(**options)
        context.add_init_script(RECORD_CSP_VIOLATIONS)
        chat = RenderChat(context.new_page(), live_server_url)
        chat.log_in()
        return chat

    yield open_page


def text_outside_math(chat: RenderChat) -> str:
    """The reply's text with every typeset formula taken out: what is left of the source."""
    return chat.last_reply.locator(".markdown").evaluate(
        """element => {
            const copy = element.cloneNode(true);
            copy.querySelectorAll(".katex").forEach((math) => math.remove());
            return copy.textContent;
        }"""
    )


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_code_is_highlighted_and_math_typeset(open_chat, scheme):
    chat = open_chat(color_scheme=scheme, permissions=["clipboard-read", "clipboard-write"])
    chat.send(offline(reply=RICH))
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))
    reply = chat.last_reply.locator(".markdown")

    code = reply.locator(".code-block code")
    expect(code).to_have_class(re.compile(r"\bhljs\b"))
    expect(code.locator(".hljs-keyword").first).to_have_text("def")
    expect(code.locator(".hljs-string").first).to_contain_text("Say hello.")
    expect(code.locator(".hljs-comment")).to_have_text('# 42 < 43 & "quotes"')
    expect(reply.locator(".code-bar")).to_contain_text("python")
    # Highlighted and plain colours differ: the theme's colours apply.
    keyword_colour = code.locator(".hljs-keyword").first.evaluate("e => getComputedStyle(e).color")
    assert keyword_colour != code.evaluate("e => getComputedStyle(e).color")

    reply.get_by_role("button", name="Copy code").click()
    expect(reply.locator(".code-copy")).to_have_text("Copied")
    assert chat.page.evaluate("navigator.clipboard.readText()") == CODE

    # Two inline formulas and two displayed ones; prices stay text.
    expect(reply.locator(".katex")).to_have_count(4)
    expect(reply.locator(".katex-display")).to_have_count(2)
    leftover = text_outside_math(chat)
    assert "$5 and $10 stay prices" in leftover
    assert "\\frac" not in leftover and "\\(" not in leftover and "$$" not in leftover
    assert "$e" not in leftover
    # KaTeX places its boxes with inline styles; the CSP must let them through (set via the CSSOM).
    strut_height = reply.locator(".katex-html .katex-strut").first.evaluate("e => e.style.height")
    assert strut_height.endswith("em")
    fonts = chat.page.evaluate(
        """async () => {
            await document.fonts.ready;
            return [...document.fonts].filter((f) => f.status === "loaded").map((f) => f.family);
        }"""
    )
    assert any(family.startswith("KaTeX") for family in fonts)
    chat.assert_clean()
    shot(chat.page, scheme)

    # A reload renders the stored reply the same way.
    chat.page.reload()
    expect(chat.last_reply.locator(".katex-display")).to_have_count(2)
    expect(chat.last_reply.locator(".code-block .hljs-keyword").first).to_have_text("def")


HOSTILE = """```python"><img src=x onerror=alert(1)>
print("in a fence with a hostile name")
```

```python <img src=x onerror=alert(2)>
html = "<img src=x onerror=alert(3)><script>alert(4)</script>"
```

```nosuchlanguage
<img src=x onerror=alert(5)>
```

Math: $\\href{javascript:alert(6)}{click}$ and $\\url{javascript:alert(7)}$ and
$\\htmlClass{code-copy}{x}$ and $<img src=x onerror=alert(8)>$ and $\\def\\x{\\x\\x}\\x$.

$$
\\includegraphics{https://tracker.example/pixel.png}
$$

<span class="math math-inline">\\href{javascript:alert(9)}{spoof}</span>
"""


def test_hostile_fences_and_formulas_stay_inert(open_chat):
    chat = open_chat()
    chat.send(offline(reply=HOSTILE))
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))
    reply = chat.last_reply.locator(".markdown")

    expect(reply.locator(".code-block")).to_have_count(3)
    codes = reply.locator(".code-block code")
    # Only a name highlight.js knows is highlighted, and only the fence's first word counts.
    expect(codes.nth(0)).not_to_have_class(re.compile(r"\bhljs\b"))
    expect(codes.nth(1)).to_have_class(re.compile(r"\bhljs\b"))
    expect(codes.nth(1)).to_contain_text("<img src=x onerror=alert(3)><script>alert(4)</script>")
    expect(codes.nth(2)).to_have_text("<img src=x onerror=alert(5)>")
    expect(reply.locator(".code-bar").nth(0)).not_to_contain_text("python")
    expect(reply.locator(".code-bar").nth(1)).to_contain_text("python")
    expect(reply.locator(".code-bar").nth(2)).to_contain_text("nosuchlanguage")

    expect(reply.locator(".katex")).to_have_count(6)
    # The macro that expands forever stops at maxExpand and shows as an error, source and all.
    expect(reply.locator(".katex-error")).to_have_text("\\def\\x{\\x\\x}\\x")
    # Commands that need trust show as errors, never as links, classes or images.
    expect(reply.locator("a")).to_have_count(0)
    expect(reply.locator(".katex .code-copy, .katex [class*='code']")).to_have_count(0)
    for selector in ("img", "script", "[onerror]", "[href]", "iframe", "button:not(.code-copy)"):
        expect(reply.locator(selector)).to_have_count(0)
    chat.page.wait_for_timeout(300)
    chat.assert_clean()
    shot(chat.page, "hostile")


# Each time the reply is redrawn, what a reader would see of it.
RECORD_REDRAWS = """() => {
    window.redraws = [];
    new MutationObserver(() => {
        const reply = [...document.querySelectorAll(".message-assistant .markdown")].at(-1);
        if (!reply) return;
        window.redraws.push({
            paragraphs: [...reply.querySelectorAll("p")].map((p) => p.textContent),
            pending: reply.querySelector(".math-pending")?.textContent ?? null,
            formulas: reply.querySelectorAll(".katex-display").length,
            code: reply.querySelector(".code-block code")?.textContent ?? null,
            keywords: [...reply.querySelectorAll(".code-block .hljs-keyword")].map((k) => k.textContent),
        });
    }).observe(document.querySelector("#messages"), { childList: true, subtree: true });
}"""


def test_a_streaming_formula_shows_as_source_until_it_closes(open_chat):
    chat = open_chat()
    chat.page.evaluate(RECORD_REDRAWS)
    chunks = [
        "Before\n\n$$\n",
        "\\int_0^1 x\\,dx",
        "\n$$\n\nAfter\n\n```python\ndef f(x):\n",
        "    return x\n```\n",
    ]
    chat.send(offline(chunks=chunks, pace_ms=300))
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))
    reply = chat.last_reply.locator(".markdown")
    expect(reply.locator(".katex-display")).to_have_count(1)
    expect(reply.locator(".math-pending")).to_have_count(0)
    expect(reply.locator("p")).to_have_text(["Before", "After"])
    expect(reply.locator(".code-block code")).to_have_text("def f(x):\n    return x\n")

    redraws = chat.page.evaluate("window.redraws")
    # The open formula shows as its source, never as a paragraph of dollars and backslashes.
    assert {"paragraphs": ["Before"], "pending": "\\int_0^1 x\\,dx", "formulas": 0} in [
        {key: redraw[key] for key in ("paragraphs", "pending", "formulas")} for redraw in redraws
    ]
    assert not any("$" in text or "\\int" in text for redraw in redraws for text in redraw["paragraphs"])
    # The fence is highlighted before it closes.
    assert any(r["code"] == "def f(x):\n" and r["keywords"] == ["def"] for r in redraws)
    chat.assert_clean()
