"""TEST DOUBLE: a stand-in for the SGLang inference engine (qwen35-prov tests only, never installed by a role).

Only `python3 -m sglang.launch_server <argv>` exists; see launch_server.py and ../README.md.
"""

__version__ = "0.5.23"
TEST_DOUBLE = True
