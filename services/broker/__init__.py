"""The broker: subscription accounting, ticker placement and frame forwarding."""
