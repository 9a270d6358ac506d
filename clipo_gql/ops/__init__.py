"""Operations: Prometheus metrics and the live job monitor."""
