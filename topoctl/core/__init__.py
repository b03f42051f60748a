"""The pure core: kernel vocabulary (state), the desired state, the planner and its actions, the rollback target."""
