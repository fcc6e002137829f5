"""Every relative link in README.md, BENCHMARKS.md and docs/ resolves: the file exists and, for
a `#anchor`, a heading of the target page has that GitHub anchor."""

import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(["README.md", "BENCHMARKS.md"]
               + [os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md"))])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def github_anchor(heading: str) -> str:
  """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped (letters,
  digits, spaces, '-' and '_' kept), spaces as '-'."""
  text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return text.replace(" ", "-")


def anchors(path: str) -> set[str]:
  with open(path, encoding="utf-8") as f:
    text = FENCE.sub("", f.read())
  return {github_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def links(page: str, root: str) -> list[str]:
  with open(os.path.join(root, page), encoding="utf-8") as f:
    text = FENCE.sub("", f.read())
  return [target for target in LINK.findall(text)
          if not re.match(r"^[a-z]+:", target)]  # http:, https:, mailto:


def broken_links(page: str, root: str = REPO) -> list[str]:
  """Each relative link of `page` (a path under `root`) that does not resolve, with what is
  missing."""
  broken = []
  for target in links(page, root):
    path, _, anchor = target.partition("#")
    resolved = (os.path.normpath(os.path.join(root, os.path.dirname(page), path)) if path
                else os.path.join(root, page))
    if not os.path.exists(resolved):
      broken.append(f"{target}: no file {os.path.relpath(resolved, root)}")
    elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
      broken.append(f"{target}: no heading with anchor #{anchor} in "
                    f"{os.path.relpath(resolved, root)}")
  return broken


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
  assert broken_links(page) == []


def test_a_broken_link_and_a_wrong_anchor_are_named(tmp_path):
  (tmp_path / "page.md").write_text(
      "# A heading, with `code`\n[ok](#a-heading-with-code) [gone](missing.md) "
      "[bad](#nowhere) [web](https://example.com/x)\n")
  assert broken_links("page.md", str(tmp_path)) == [
      "missing.md: no file missing.md", "#nowhere: no heading with anchor #nowhere in page.md"]
