"""Rectified flow: training loss and timestep sampling (`loss`), samplers, guidance, budget schedules and TeaCache."""
