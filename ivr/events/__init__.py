"""Call events for the ticket backend: model, builder, durable outbox, pusher (the
reference backend that receives them is ``ivr.ticketsink``)."""
