"""Call events for the ticket backend: model, builder, durable outbox, pusher, sink."""
