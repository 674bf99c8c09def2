"""What every command line of the package shares: its help format (defaults shown where they say something,
descriptions and epilogs as written)."""

from __future__ import annotations

import argparse


class HelpFormat(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action):
        if action.default in (None, False, [], argparse.SUPPRESS) or action.required:
            return action.help
        return super()._get_help_string(action)
