"""The pure domain core: money, pair rules, commands, events, the order book, ledger rules.

Nothing here performs I/O, reads the clock or logs; time arrives inside commands.
"""
