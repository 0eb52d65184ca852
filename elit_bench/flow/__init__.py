"""Rectified flow: training loss and timestep sampling (`loss`), samplers, guidance, budget schedules, TeaCache and TaylorSeer."""
