package bus

import (
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
)

// NewInProcess returns the embedded bus: a Watermill GoChannel whose
// Publish blocks until the subscriber acknowledged the message. The relay
// therefore moves its checkpoint only after the runner handled the event,
// which gives the in-process bus Kafka's at-least-once behaviour across a
// crash. Subscribers must subscribe before the relay starts: GoChannel drops
// messages published to a topic nobody listens to.
func NewInProcess(log *slog.Logger) *gochannel.GoChannel {
	return gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NewSlogLogger(log))
}

// Logger adapts slog for Watermill's router and pub/subs.
func Logger(log *slog.Logger) watermill.LoggerAdapter { return watermill.NewSlogLogger(log) }
