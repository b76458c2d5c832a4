#!/usr/bin/env python3
"""Rebuilds the retrieval test corpus from the Rust Book that rustup installs.

The pages are the book's own HTML (MIT/Apache-2.0, The Rust Project
Developers), cut down to the chapter text inside <main>: the navigation
sidebar repeats on every page and would only add noise to the index.
Usage: scripts/build-rag-corpus.py [BOOK_HTML_DIR]
"""
import glob
import os
import re
import sys

PAGES = """
ch01-01-installation ch01-03-hello-cargo ch02-00-guessing-game-tutorial
ch03-01-variables-and-mutability ch03-02-data-types ch03-03-how-functions-work
ch03-05-control-flow ch04-01-what-is-ownership ch04-02-references-and-borrowing
ch04-03-slices ch05-01-defining-structs ch05-03-method-syntax ch06-01-defining-an-enum
ch06-02-match ch07-02-defining-modules-to-control-scope-and-privacy
ch07-04-bringing-paths-into-scope-with-the-use-keyword ch08-01-vectors ch08-02-strings
ch08-03-hash-maps ch09-01-unrecoverable-errors-with-panic
ch09-02-recoverable-errors-with-result ch10-01-syntax ch10-02-traits ch10-03-lifetime-syntax
ch11-01-writing-tests ch11-02-running-tests ch11-03-test-organization
ch12-05-working-with-environment-variables ch13-01-closures ch13-02-iterators
ch14-01-release-profiles ch14-02-publishing-to-crates-io ch14-03-cargo-workspaces
ch15-01-box ch15-03-drop ch15-04-rc ch15-05-interior-mutability ch15-06-reference-cycles
ch16-01-threads ch16-02-message-passing ch16-03-shared-state ch17-01-futures-and-syntax
ch18-02-trait-objects ch19-03-pattern-syntax ch20-01-unsafe-rust ch20-05-macros
ch21-01-single-threaded
""".split()


def main() -> None:
    default = glob.glob(os.path.expanduser("~/.rustup/toolchains/*/share/doc/rust/html/book"))
    source = sys.argv[1] if len(sys.argv) > 1 else sorted(default)[0]
    target = os.path.join(os.path.dirname(__file__), "..", "crates", "switchyard-retrieval",
                          "tests", "corpus", "rust-book")
    os.makedirs(target, exist_ok=True)
    for page in PAGES:
        with open(os.path.join(source, page + ".html"), encoding="utf-8") as f:
            html = f.read()
        main_part = re.search(r"<main>(.*)</main>", html, re.S).group(1)
        # Heading anchors only repeat the heading's text.
        main_part = re.sub(r'<a class="header" href="[^"]*">(.*?)</a>', r"\1", main_part)
        title = re.search(r"<h[12][^>]*>(.*?)</h[12]>", main_part, re.S).group(1)
        title = re.sub(r"<[^>]+>", "", title).strip()
        with open(os.path.join(target, page + ".html"), "w", encoding="utf-8") as f:
            f.write(f"<!DOCTYPE html>\n<html><head><title>{title}</title></head><body>\n")
            f.write(main_part.strip() + "\n</body></html>\n")


if __name__ == "__main__":
    main()
