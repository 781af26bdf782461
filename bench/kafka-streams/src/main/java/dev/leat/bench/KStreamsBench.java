package dev.leat.bench;

import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The Kafka Streams side of bench/kafka-streams/run.sh: the same two
 * processors as Leat's guest examples, with processing.guarantee=exactly_once_v2.
 *
 * <pre>
 * java -cp 'target/kstreams-bench.jar:target/lib/*' dev.leat.bench.KStreamsBench \
 *   uppercase|word-count BOOTSTRAP APPLICATION_ID INPUT OUTPUT THREADS STATE_DIR
 * </pre>
 *
 * <ul>
 *   <li>uppercase (guest-examples/uppercase): each value upper-cased, the key
 *       kept (a null value passes through).</li>
 *   <li>word-count (guest-examples/word-count): each value split into words
 *       (maximal runs of letters or digits, lower-cased); for each distinct
 *       word of a value, in order of first appearance, its count in the store
 *       plus its occurrences in the value is stored and emitted as (word,
 *       count as decimal text). As in Leat, the counts belong to the input
 *       partition (the task's store): no repartition by word. The store is
 *       Kafka Streams' default persistent one (RocksDB) with its changelog,
 *       without a record cache (every update is emitted, as Leat does).</li>
 * </ul>
 *
 * Runs until SIGTERM; prints "kstreams: RUNNING" when the application is
 * first RUNNING (run.sh's start of consuming).
 */
public final class KStreamsBench {
  static final String STORE = "counts";

  public static void main(String[] args) throws InterruptedException {
    if (args.length != 7) {
      System.err.println(
          "usage: KStreamsBench uppercase|word-count BOOTSTRAP APPLICATION_ID INPUT OUTPUT"
              + " THREADS STATE_DIR");
      System.exit(2);
    }
    String workload = args[0];
    Properties props = new Properties();
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[1]);
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[2]);
    // The two settings of the comparison: exactly-once (EOS v2, as Leat on
    // Kafka), and as many stream threads as Leat has instances. The rest are
    // Kafka Streams' defaults (commit.interval.ms is 100 under EOS).
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args[5]));
    props.put(StreamsConfig.STATE_DIR_CONFIG, args[6]);

    StreamsBuilder builder = new StreamsBuilder();
    String input = args[3];
    String output = args[4];
    switch (workload) {
      case "uppercase" ->
          builder.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.String()))
              .mapValues(v -> v == null ? null : v.toUpperCase(Locale.ROOT))
              .to(output, Produced.with(Serdes.ByteArray(), Serdes.String()));
      case "word-count" -> {
        builder.addStateStore(
            Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(STORE), Serdes.String(), Serdes.String()));
        builder.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.String()))
            .process(WordCount::new, STORE)
            .to(output, Produced.with(Serdes.String(), Serdes.String()));
      }
      default -> {
        System.err.println("unknown workload " + workload + " (uppercase, word-count)");
        System.exit(2);
      }
    }

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    CountDownLatch stopped = new CountDownLatch(1);
    streams.setStateListener(
        (now, before) -> {
          if (now == KafkaStreams.State.RUNNING && before == KafkaStreams.State.REBALANCING) {
            System.out.println("kstreams: RUNNING");
            System.out.flush();
          }
          if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
            stopped.countDown();
          }
        });
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  streams.close(Duration.ofSeconds(30));
                  stopped.countDown();
                }));
    streams.start();
    stopped.await();
  }

  /** guest-examples/word-count, on a Kafka Streams store. */
  static final class WordCount implements Processor<byte[], String, String, String> {
    private ProcessorContext<String, String> context;
    private KeyValueStore<String, String> counts;

    @Override
    public void init(ProcessorContext<String, String> context) {
      this.context = context;
      this.counts = context.getStateStore(STORE);
    }

    @Override
    public void process(Record<byte[], String> record) {
      String text = record.value();
      if (text == null) {
        return;
      }
      // Words in order of first appearance, with their occurrences.
      Map<String, Long> words = new LinkedHashMap<>();
      int i = 0;
      int n = text.length();
      while (i < n) {
        while (i < n && !Character.isLetterOrDigit(text.codePointAt(i))) {
          i += Character.charCount(text.codePointAt(i));
        }
        int start = i;
        while (i < n && Character.isLetterOrDigit(text.codePointAt(i))) {
          i += Character.charCount(text.codePointAt(i));
        }
        if (i > start) {
          words.merge(text.substring(start, i).toLowerCase(Locale.ROOT), 1L, Long::sum);
        }
      }
      for (Map.Entry<String, Long> e : words.entrySet()) {
        String stored = counts.get(e.getKey());
        long count = (stored == null ? 0 : Long.parseLong(stored)) + e.getValue();
        String text10 = Long.toString(count);
        counts.put(e.getKey(), text10);
        context.forward(record.withKey(e.getKey()).withValue(text10));
      }
    }
  }
}
