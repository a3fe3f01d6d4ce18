"""``tradeplane chaos``: the local platform under a mixed load while faults are injected on
a seeded schedule, with the exchange's invariants checked after each fault and at the end.

- :mod:`~tradeplane.chaos.plan`: the faults, the options' parsing and the seeded schedule
  (pure);
- :mod:`~tradeplane.chaos.report`: what each injection measured, and the table (pure);
- :mod:`~tradeplane.chaos.load`: the load, through the REST API with signed requests;
- :mod:`~tradeplane.chaos.compose`: the one module that reaches the stores (PostgreSQL,
  NATS, Redis): the accounts it trades with, and the checks;
- :mod:`~tradeplane.chaos.custody`: the regtest chain (the network's litecoind and the
  exchange's), the deposits and withdrawals of the load, chain-reorg and the custody
  check (its stores' side in compose);
- :mod:`~tradeplane.chaos.disk`, :mod:`~tradeplane.chaos.slow`,
  :mod:`~tradeplane.chaos.clock`: the faults that take more than a signal (a full disk, a
  throttled consumer, a skewed clock);
- :mod:`~tradeplane.chaos.run`: the platform, the faults and the loop that ties them.
"""
